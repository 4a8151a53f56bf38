"""How much of what training batches hold is real tokens: token-budget bucketing vs fixed-size batches.

Why: padding is compute and memory spent on nothing. The sampler cuts each pool of a task's samples,
sorted by length, into batches whose padded size fits `train.max_tokens` on both sides of the model
(batch size x the longest encoder sequence, and likewise the decoder input). This replays the real
sampler (`WeightedMultitaskSampler`, the params' `train:` settings and task weights) over the stored
lengths of every task in a shards directory ([encoder, decoder] positions per sample: prompt,
specials, image patches, audio frames, as the model sees them) and counts, over both sides, the share
of the padded batch area that is real. The baseline is what a fixed batch size gives: for the same
sequence of tasks, batches of a fixed number of samples in random order, the size being the mean
size of the sampler's batches of that task (so both see the same samples per task on average).

    python bench/padding.py [--shards data/shards] [--params params.yaml] [--steps N]

Reads the manifests and lengths files only (no shard is opened).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofasys.data.manifest import MANIFEST_NAME, ManifestError, load_lengths, read_manifest
from ofasys.training.sampler import WeightedMultitaskSampler, sample_lengths
from pipeline import run_config
from pipeline.params import load_params


@dataclass
class StoredLengths:
    """A task's train split as the sampler sees it: its name and its stored lengths."""

    name: str
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)


def load_tasks(shards: Path, split: str = "train") -> list[StoredLengths]:
    tasks = []
    for manifest_path in sorted(shards.glob(f"*/{MANIFEST_NAME}")):
        try:
            manifest = read_manifest(manifest_path)
            entry = manifest["splits"][split]
            lengths = load_lengths(manifest_path.parent / entry["lengths_file"], int(entry["num_samples"]))
        except ManifestError as exc:  # shards of an older format: one line with the fix
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        tasks.append(StoredLengths(manifest["task"], lengths))
    if not tasks:
        print(f"error: no {MANIFEST_NAME} under {shards}/*/ (run `dvc repro materialise` first)", file=sys.stderr)
        sys.exit(2)
    return tasks


def real_share(batches: list[tuple[str, list[int]]], lengths: dict[str, np.ndarray]) -> float:
    """Real tokens / padded tokens, encoder and decoder summed, over `batches` ((task, indices))."""
    real = padded = 0
    for task, batch in batches:
        lens = lengths[task][batch]
        real += int(lens.sum())
        padded += len(batch) * int(lens.max(axis=0).sum())
    return real / padded


def fixed_size_batches(ours: list[tuple[str, list[int]]], sizes: dict[str, int], num_samples: dict[str, int],
                       seed: int) -> list[tuple[str, list[int]]]:
    """For each of `ours`' steps, a batch of its task of `sizes[task]` samples: consecutive samples of
    the task's epoch permutations (random order, every sample once per epoch)."""
    rng = np.random.default_rng(seed)
    streams: dict[str, list[int]] = {}
    out = []
    for task, _ in ours:
        stream = streams.setdefault(task, [])
        while len(stream) < sizes[task]:
            stream += rng.permutation(num_samples[task]).tolist()
        out.append((task, stream[: sizes[task]]))
        del stream[: sizes[task]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, default=Path("data/shards"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--steps", type=int, default=0, help="micro-batches to draw (default: the params' whole run)")
    args = p.parse_args()
    params = load_params(args.params)
    config = run_config.train_config(params)
    tasks = load_tasks(args.shards)
    weights = {t.name: (params.tasks[t.name].weight if t.name in params.tasks else 1.0) for t in tasks}
    sampler = WeightedMultitaskSampler.from_config(tasks, weights, config)
    steps = args.steps or config.max_steps * config.grad_accum
    ours = []
    for _ in range(steps):
        batch = sampler.next_batch()
        ours.append((batch.task, list(batch.indices)))
    lengths = {t.name: sample_lengths(t.lengths) for t in tasks}
    sizes = {}
    for t in tasks:
        counts = [len(b) for name, b in ours if name == t.name]
        sizes[t.name] = max(1, round(float(np.mean(counts)))) if counts else 1
    fixed = fixed_size_batches(ours, sizes, {t.name: len(t) for t in tasks}, config.seed)
    print(f"non-pad share of tokens in training batches, ours vs fixed-size batches: "
          f"{real_share(ours, lengths):.3f} vs {real_share(fixed, lengths):.3f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
