"""What materialisation buys the loader: batches from the shards vs the same batches decoded from the
raw rows on the fly, per modality (image: PNG decode + resize; audio: WAV decode + 80-bin fbank;
video: frame decode, when the shards dir has a video task).

Both paths do what one loader worker does per micro-batch, in this one process, interleaved:
(a) read the materialised samples from the shards and collate; (b) materialise the same train rows in
memory from the raw parquet (`sample_from_row`: what a loader without materialisation repeats every
epoch) and collate. The first batch of each path is checked to hold identical tensors.

    python bench/decode_raw.py [--shards data/shards] [--raw data/raw] [--vocab assets/vocab.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ofasys.data.rows import sample_from_row
from ofasys.data.task_data import ShardTaskData
from ofasys.vocab import UnifiedVocab

BATCH = 32
KINDS = {"IMAGE": "image", "AUDIO": "audio fbank", "VIDEO": "video"}


def modality_tasks(shards: Path) -> dict[str, str]:
    """The first task of each embedded input modality found under `shards` (kind -> task)."""
    found: dict[str, str] = {}
    for manifest in sorted(shards.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        for slot in data["slots"]:
            kind = KINDS.get(slot["modality"])
            if kind and slot["side"] == "input" and kind not in found and "train" in data["splits"]:
                found[kind] = data["task"]
    return found


def raw_rows(raw: Path, data: ShardTaskData) -> list[dict]:
    """The raw train rows that were materialised, in sample order (a sample's meta records its row)."""
    table = pq.read_table(raw / data.name / "train.parquet").to_pylist()
    columns = set(data.instruction.columns())
    return [{k: table[data.get(i).meta["row"]][k] for k in columns} for i in range(len(data))]


def tensors(batch) -> list[torch.Tensor]:
    out = [s.tensor for s in batch.segments] + [s.mask for s in batch.segments if s.mask is not None]
    return out + [t for t in (batch.decoder_input, batch.target, batch.loss_mask) if t is not None]


def time_batches(make, starts: list[int]) -> float:
    """Samples/s of making a batch at each start index."""
    begin = time.perf_counter()
    for start in starts:
        make(start)
    return len(starts) * BATCH / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    parser.add_argument("--batches", type=int, default=12, help="batches of 32 per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    vocab = UnifiedVocab.load(args.vocab)
    found = modality_tasks(args.shards)
    if "video" not in found:
        print(f"(no video task in {args.shards}: image and audio only)")
    per_sample = {"shards": 0.0, "raw": 0.0}
    for kind, name in found.items():
        data = ShardTaskData(args.shards / name / "manifest.json", "train", vocab)
        rows = raw_rows(args.raw, data)
        size = int(data.manifest.get("image_size") or 64)
        starts = (np.random.default_rng(0).permutation(len(data) // BATCH)[: args.batches] * BATCH).tolist()

        def from_shards(start: int):
            return data.collate([data.get(i) for i in range(start, start + BATCH)], np.random.default_rng(start), True)

        def from_raw(start: int):
            samples = [sample_from_row(data.instruction, rows[i], vocab, image_size=size, task=name,
                                       sides=("input", "output")) for i in range(start, start + BATCH)]
            return data.collate(samples, np.random.default_rng(start), True)

        a, b = from_shards(starts[0]), from_raw(starts[0])
        if not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(tensors(a), tensors(b), strict=True)):
            sys.exit(f"{name}: the raw-decoded batch differs from the materialised one")
        rates: dict[str, list[float]] = {"shards": [], "raw": []}
        for _ in range(args.rounds):  # interleaved, so background load hits both alike
            rates["shards"].append(time_batches(from_shards, starts))
            rates["raw"].append(time_batches(from_raw, starts))
        median = {k: float(np.median(v)) for k, v in rates.items()}
        print(f"{kind} ({name}): shards {median['shards']:.0f} samples/s, raw decode {median['raw']:.0f} "
              f"samples/s, {median['shards'] / median['raw']:.1f}x")
        for k in per_sample:
            per_sample[k] += 1.0 / median[k]
    kinds = ", ".join(found)
    print(f"loader from shards vs on-the-fly decoding of the raw rows ({kinds}): "
          f"{per_sample['raw'] / per_sample['shards']:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
