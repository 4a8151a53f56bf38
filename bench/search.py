"""What the generation path's two speed-ups buy, each measured side by side on the same samples.

(a) KV-cached vs uncached beam search: the model's `CachedDecoder` appends one position's keys and
values per step; the uncached decoder below reruns the whole decoder over every prefix at every step
(what a search without a cache does). Same search, same constraints: the outputs must be identical.
(b) batched vs one-at-a-time inference: the same samples generated in batches of `--batch` and one
by one, each batch collated, planned and generated (`UniversalModel.generate`). Same outputs again.

Each side is timed `--repeats` times, the two sides alternating, and the fastest run of each is
compared. Torch runs on `--threads` intra-op threads (default 1): the demo's model is small enough
that a second thread mostly waits for the first, and waits badly when other processes hold the
cores. The clock is this process's CPU time (`--clock cpu`, the default): with one thread it is the
wall time an idle machine would show, and unlike wall time it does not count the other processes of
a shared machine; `--clock wall` measures wall time (use it with several threads).

Run after `dvc repro` of the demo, from the project directory (it reads the exported model and a
task's test shards, and writes nothing):

    .venv/bin/python bench/search.py [task] [--export checkpoints/final] [--shards data/shards]

It prints exactly two lines; the timings in seconds go to stderr, with the encoder's share of the
inference time (batching cannot make the encoder's arithmetic smaller, only its overheads):

    KV-cached vs uncached beam search, same outputs: <x>x (goal >= 3x)
    batched vs one-at-a-time inference, same outputs: <x>x (goal >= 8x)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ofasys.data.task_data import ShardTaskData
from ofasys.generation.beam import beam_search
from ofasys.inference import OFASys


class UncachedDecoder:
    """A `StepDecoder` without a cache: every step decodes the whole prefix again."""

    def __init__(self, model, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int):
        self.model = model
        self.memory = memory.repeat_interleave(beam_size, dim=0)
        self.memory_mask = memory_mask.repeat_interleave(beam_size, dim=0)
        self.history = torch.zeros((self.memory.shape[0], 0), dtype=torch.long, device=memory.device)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.history = torch.cat([self.history, tokens.to(self.history.device)[:, None]], 1)
        hidden = self.model.decode(self.history, self.memory, self.memory_mask)
        return self.model.output_logits(hidden[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        self.history = self.history.index_select(0, index.to(self.history.device))

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (finished samples dropped), as the cached decoder does: like for like."""
        rows = rows.to(self.history.device)
        self.history = self.history.index_select(0, rows)
        self.memory = self.memory.index_select(0, rows)
        self.memory_mask = self.memory_mask.index_select(0, rows)


def search(model, batch, plans, beam: int, cached: bool) -> list[list[int]]:
    """The model's own beam search (`UniversalModel.generate`) with the cached or the uncached decoder."""
    if cached:
        return model.generate(batch, plans, beam_size=beam)
    with torch.no_grad():
        memory, mask = model.encode(batch)
        lengths = (batch.decoder_input != model.config.pad_id).sum(1).tolist()
        prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
        caps = [p.max_new_tokens for p in plans]
        found = beam_search(UncachedDecoder(model, memory, mask, beam), prefixes, plans, beam_size=beam,
                            eos_id=model.config.eos_id, max_new_tokens=caps)
    return [h.tokens for h in found]


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def fastest(repeats: int, *fns):
    """(outputs, fastest seconds) of each fn, run `repeats` times in alternation."""
    best = [float("inf")] * len(fns)
    outs: list = [None] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            start = clock()
            outs[j] = fn()
            best[j] = min(best[j], clock() - start)
    return outs, best


def fail(message: str) -> None:
    """A usage error: one line naming the option and the fix, exit status 2."""
    print(f"bench/search.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", nargs="?", default="caption")
    p.add_argument("--export", default="checkpoints/final", help="the exported model (OFASys.from_pretrained)")
    p.add_argument("--shards", default="data/shards", help="directory of <task>/manifest.json")
    p.add_argument("--samples", type=int, default=64, help="test samples generated")
    p.add_argument("--batch", type=int, default=64, help="samples per batch of the batched side")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side; the fastest counts")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                   help="cpu: this process's CPU time (one thread: the wall time of an idle machine); wall")
    args = p.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    for name in ("samples", "batch", "beam", "repeats", "threads"):
        if getattr(args, name) < 1:
            fail(f"--{name}: must be >= 1, got {getattr(args, name)}")
    manifest = Path(args.shards) / args.task / "manifest.json"
    if not (Path(args.export) / "config.json").is_file():
        fail(f"--export {args.export}: no exported model there; run `dvc repro` or pass the export's directory")
    if not manifest.is_file():
        fail(f"--shards {args.shards}: no {manifest}; pass the directory holding <task>/manifest.json")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pretrained = OFASys.from_pretrained(args.export)
    model = pretrained.model.eval()
    data = ShardTaskData(manifest, "test", pretrained.vocab)
    count = min(args.samples, len(data))
    samples = [data.get(i) for i in range(count)]
    batch = data.collate_for_generation(samples)
    plans = [data.plan(s) for s in samples]

    search(model, batch, plans, args.beam, cached=True)  # warm-up: first-call allocations are not the search's
    (cached, uncached), (t_cached, t_uncached) = fastest(
        args.repeats, lambda: search(model, batch, plans, args.beam, True),
        lambda: search(model, batch, plans, args.beam, False))
    if cached != uncached:
        raise SystemExit("cached and uncached beam search disagree; the cache is wrong")

    def run(batch_size: int):
        out = []
        for start in range(0, count, batch_size):
            chunk = samples[start : start + batch_size]
            out += model.generate(data.collate_for_generation(chunk), [data.plan(s) for s in chunk],
                                  beam_size=args.beam)
        return out

    (together, alone), (t_batched, t_alone) = fastest(args.repeats, lambda: run(args.batch), lambda: run(1))
    if together != alone:
        raise SystemExit("batched and one-at-a-time generation disagree; padding leaks into a sample")
    # What neither search nor batching can shrink: the encoder's own work, batched and one at a time.
    singles = [data.collate_for_generation([s]) for s in samples]
    with torch.no_grad():
        _, (e_batched, e_alone) = fastest(
            args.repeats,
            lambda: [model.encode(data.collate_for_generation(samples[i : i + args.batch]))
                     for i in range(0, count, args.batch)],
            lambda: [model.encode(b) for b in singles])
    print(f"{args.task}: beam {args.beam}, {count} samples, {args.threads} thread(s): cached {t_cached:.3f} s, "
          f"uncached {t_uncached:.3f} s; batched ({args.batch}) {t_batched:.3f} s, one at a time {t_alone:.3f} s; "
          f"of which encoding {e_batched:.3f} s batched, {e_alone:.3f} s one at a time", file=sys.stderr)
    print(f"KV-cached vs uncached beam search, same outputs: {t_uncached / t_cached:.1f}x (goal >= 3x)")
    print(f"batched vs one-at-a-time inference, same outputs: {t_alone / t_batched:.1f}x (goal >= 8x)")


if __name__ == "__main__":
    main()
