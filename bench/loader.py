"""Does the training loader keep the model fed, and what does it cost the training step?

On the demo's shards, mixture and model (the `model:` and `train:` sections of --params, built like
the train stage does), measured side by side in one run:

1. Loader capacity vs consumption: samples/s the `TrainLoader` delivers on its own (its workers at
   full speed, nothing training) vs samples/s the model trains on (forward + backward + AdamW step on
   batches already in memory). Goal: the loader is >= 10x faster, so it is never the bottleneck.
2. Training with the loader vs with the same batches already in memory. The machine may be shared
   and its load swing by 2x within a minute, so the two are timed *paired*: each micro-batch is
   trained once from memory and once as the loader delivers it (the same batch), which goes first
   alternating, with the loader's workers alive throughout. A round's ratio is its training time
   from the loader (`next()` included) over its time from memory, i.e. the ratio of the mean step
   times, which is what a run's length scales by; the goal line is the median over rounds, robust
   to a burst of load hitting one. The median of the per-pair ratios is printed beside it: it
   weighs a 20 ms step like a 200 ms one, so a fixed cost per batch (receiving it from a worker)
   shows larger there. A worker collates the next item right after a `next()`, so its competition
   for the cores lands on the step taken from the loader; the workers' total CPU time is printed.

Each loader is started (its workers forked, the first batch delivered) before timing: a run pays that
once, not per step.

    python bench/loader.py [--shards data/shards] [--vocab assets/vocab.json] [--params params.yaml]
                           [--workers 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch

from ofasys.data.task_data import ShardTaskData
from ofasys.model import build_model
from ofasys.training.data_check import verify_once
from ofasys.training.loader import TrainLoader, WorkItem, make_batch
from ofasys.training.sampler import WeightedMultitaskSampler
from ofasys.vocab import UnifiedVocab
from pipeline import run_config
from pipeline.params import load_params


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def start_loader(tasks, sampler, cfg, micro: int, workers: int) -> TrainLoader:
    """A loader for `micro` micro-batches (plus one consumed here, to start it) from `sampler`'s state."""
    steps = -(-(micro + 1) // cfg.grad_accum)
    loader = TrainLoader(tasks, copy.deepcopy(sampler), seed=cfg.seed, rank=0, start_step=0, max_steps=steps,
                         grad_accum=cfg.grad_accum, num_workers=workers, prefetch_factor=cfg.prefetch_factor)
    loader.next(0, 0)
    return loader


def positions(cfg, micro: int):
    """(step, micro) of the micro-batches after the first."""
    return [divmod(k, cfg.grad_accum) for k in range(1, micro + 1)]


def loader_rate(tasks, sampler, cfg, micro: int, workers: int) -> float:
    """Samples/s the loader delivers with nothing else running."""
    with start_loader(tasks, sampler, cfg, micro, workers) as loader:
        n, start = 0, time.perf_counter()
        for step, m in positions(cfg, micro):
            n += len(loader.next(step, m)[1])
        return n / (time.perf_counter() - start)


def train_micro(model, opt, batch, k: int, accum: int) -> None:
    loss, _ = model.loss(batch, 0.1)
    (loss / accum).backward()
    if (k + 1) % accum == 0:
        opt.step()
        opt.zero_grad(set_to_none=True)


def paired(model, opt, tasks, sampler, cfg, batches, workers: int) -> tuple[list[float], list[float], float]:
    """(seconds from memory, seconds from the loader) of each micro-batch, and the workers' CPU
    seconds, alternating between the in-memory batch and the same batch from the loader."""
    memory: list[float] = []
    loaded: list[float] = []
    with start_loader(tasks, sampler, cfg, len(batches), workers) as loader:
        pids = loader.worker_pids()
        cpu = cpu_seconds(pids)
        for k, (step, m) in enumerate(positions(cfg, len(batches))):
            for from_loader in ((False, True) if k % 2 == 0 else (True, False)):  # whichever runs second
                start = time.perf_counter()                                     # finds warm caches
                batch = loader.next(step, m)[1] if from_loader else batches[k]
                train_micro(model, opt, batch, k, cfg.grad_accum)
                (loaded if from_loader else memory).append(time.perf_counter() - start)
        workers_cpu = cpu_seconds(pids) - cpu
    return memory, loaded, workers_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--micro", type=int, default=32, help="micro-batches per timing")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes (0: the training thread)")
    args = parser.parse_args()

    params = load_params(args.params)
    vocab = UnifiedVocab.load(args.vocab)
    cfg = run_config.train_config(params)
    workers = args.workers
    names = [n for n in params.tasks if (args.shards / n / "manifest.json").is_file()]
    tasks = {n: ShardTaskData(args.shards / n / "manifest.json", "train", vocab) for n in names}
    verify_once(tasks.values(), 0, 1, torch.device("cpu"))  # as the trainer does: no hashing while timed
    sampler = WeightedMultitaskSampler.from_config(list(tasks.values()), {n: params.tasks[n].weight for n in names},
                                                   cfg)
    model = build_model(run_config.model_config(params, vocab.size), cfg.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(f"tasks {names}; {torch.get_num_threads()} torch threads, {workers} loader workers, "
          f"prefetch {cfg.prefetch_factor}, {args.micro} micro-batches per timing")

    # The in-memory batches: exactly those the loader makes, made here on this thread.
    look = copy.deepcopy(sampler)
    items = [WorkItem.of(*divmod(k, cfg.grad_accum), look.next_batch()) for k in range(args.micro + 1)]
    batches = [make_batch(tasks[it.task], it, cfg.seed, 0) for it in items][1:]
    for k, batch in enumerate(batches[: 2 * cfg.grad_accum]):  # warm up
        train_micro(model, opt, batch, k, cfg.grad_accum)

    samples = sum(len(b) for b in batches)
    capacity, pair_ratios, round_ratios, memory_total, workers_total = [], [], [], 0.0, 0.0
    for r in range(args.rounds):
        loader_sps = loader_rate(tasks, sampler, cfg, args.micro, workers)
        memory, loaded, workers_cpu = paired(model, opt, tasks, sampler, cfg, batches, workers)
        capacity.append(loader_sps / (samples / sum(memory)))
        pair_ratios += [b / a for a, b in zip(memory, loaded)]
        round_ratios.append(sum(loaded) / sum(memory))
        memory_total, workers_total = memory_total + sum(memory), workers_total + workers_cpu
        print(f"round {r + 1}: loader alone {loader_sps:.0f} samples/s, training {samples / sum(memory):.1f} "
              f"samples/s; {args.micro} micro-batches {sum(memory):.2f} s from memory, {sum(loaded):.2f} s from "
              f"the loader, whose workers used {workers_cpu:.2f} s CPU", flush=True)
    median, share = float(np.median(round_ratios)), workers_total / memory_total
    print(f"loader workers' CPU: {share:.1%} of the training time from memory; median of the per-step ratios "
          f"{float(np.median(pair_ratios)):.3f}x")
    print(f"loader samples/s vs the model's training consumption (tiny model, CPU): {np.median(capacity):.1f}x "
          f"(goal >= 10x)")
    print(f"train step with the loader vs with batches already in memory: {median:.3f}x (goal <= 1.05x)")


if __name__ == "__main__":
    main()
