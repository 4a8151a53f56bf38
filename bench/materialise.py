"""Materialising a task with 2 worker processes vs 1, side by side, asserting byte-identical output.

Why: decoding rows (PNG decode and resize, tokenizing, audio features) is what the materialise
stage spends its time on and rows are independent, so `materialise.num_workers` processes decode
while one writes in row order. This times both on the same task in one run (alternating, best of
`--repeats` each, so a busy neighbour hurts both alike) and checks the output directories hold the
same bytes. As a control it also times two independent 1-worker runs started together: on a machine
whose second core is taken by other work, that ceiling is below 2x and no 2-process speed-up can
beat it.

    python bench/materialise.py [--task caption] [--raw data/raw] [--vocab assets/vocab.json] [--repeats 2]

Reads the task's instruction, image size, materialise and model settings from params.yaml (as the
stage does) and writes only into a temporary directory.
"""

from __future__ import annotations

# Only light imports here: worker processes start by importing this module again ('spawn').
import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path


def dir_hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children (the worker processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _mean(pairs: list[tuple[float, float]]) -> str:
    return f"{sum(a for a, _ in pairs) / len(pairs):.1f} + {sum(b for _, b in pairs) / len(pairs):.1f}"


def _materialise(config) -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = "1"  # one torch thread if a modality imports it, as in the stage
    from ofasys.data.materialise import materialise_task

    materialise_task(config)


def _two_at_once(a, b) -> float:
    """Seconds for two independent 1-worker runs started together (separate processes): what two
    cores give right now, the ceiling for any 2-process speed-up (a busy machine gives less)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_materialise, args=(c,)) for c in (a, b)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0, proc.exitcode
    return time.perf_counter() - start


def main() -> None:
    import dataclasses

    import torch

    from ofasys.data.materialise import MaterialiseConfig, materialise_task
    from ofasys.vocab import UnifiedVocab
    from pipeline import run_config
    from pipeline.params import load_params

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="caption")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="directory of <task>/<split>.parquet")
    p.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)  # as the stage runs (audio features): the 1-worker run is its own process
    params = load_params(args.params)
    task = params.tasks[args.task]
    splits = {s.stem: s for s in sorted((args.raw / args.task).glob("*.parquet"))}
    model = run_config.model_config(params, UnifiedVocab.load(args.vocab).size)
    seconds: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[tuple[float, float]]] = {1: [], 2: []}  # (this process, workers) CPU seconds
    with tempfile.TemporaryDirectory(prefix="bench-materialise-") as tmp:
        for repeat in range(args.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}-{repeat}"
                config = MaterialiseConfig(
                    task=args.task, instruction=task.instruction, raw_splits=splits, vocab_path=args.vocab,
                    out_dir=out, image_size=task.image_size, shard_samples=params.materialise.shard_samples,
                    reject_budget=params.materialise.reject_budget, params_hash=run_config.task_hash(params, args.task),
                    seed=params.seed, model=model, progress=False, num_workers=workers)
                before = _cpu()
                start = time.perf_counter()
                materialise_task(config)
                seconds[workers].append(time.perf_counter() - start)
                after = _cpu()
                cpu[workers].append((after[0] - before[0], after[1] - before[1]))
        # The control: two 1-worker runs at once in separate processes, vs one alone
        alone = min(seconds[1])
        pair = _two_at_once(*(dataclasses.replace(config, out_dir=Path(tmp) / f"pair-{k}", num_workers=1) for k in (0, 1)))
        hashes = {name: dir_hashes(Path(tmp) / name) for name in sorted(p.name for p in Path(tmp).iterdir())}
    first = next(iter(hashes.values()))
    assert all(h == first for h in hashes.values()), "outputs differ between runs"
    one, two = min(seconds[1]), min(seconds[2])
    print(f"{args.task}: 1 worker {one:.2f}s, 2 workers {two:.2f}s (best of {args.repeats}; {len(first)} files each); "
          f"CPU seconds (writer + workers) {_mean(cpu[1])} vs {_mean(cpu[2])}")
    print(f"control: throughput of two independent 1-worker runs at once vs one alone: {2 * alone / pair:.2f}x "
          f"(2.0x = a free second core; the ceiling for the figure below)")
    print(f"materialise with 2 worker processes vs 1 (byte-identical output): {one / two:.2f}x (goal >= 1.8x)")


if __name__ == "__main__":
    main()
