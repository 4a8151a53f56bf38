"""Does the training loader keep the model fed, and what does it cost the training step?

On the demo's shards, mixture and model (the `model:` and `train:` sections of --params, built like
the train stage does), measured side by side in one run:

1. Loader capacity vs consumption: samples/s the `TrainLoader` delivers on its own (its workers at
   full speed, nothing training) vs samples/s the model trains on (forward + backward + AdamW step on
   batches already in memory). Goal: the loader is >= 10x faster, so it is never the bottleneck.
2. Training with the loader vs with the same batches already in memory: the loader's whole cost on the
   step (its workers compete with the training threads for the cores). Goal: <= 1.05x.

Wall time is what a run feels, but on a shared machine it swings with everyone else's load, so the
CPU time spent (this process and its workers, `getrusage`) is printed beside it: the loader's whole
extra work, which is what slows the step on a machine the training has to itself.

The machine may be shared, so the settings alternate in short rounds (A B B A order, cancelling
drift within a round) and each ratio is the median of the per-round ratios. Each loader is started
(its workers forked, the first batch delivered) before its timing starts: a run pays that once, not
per step.

    python bench/loader.py [--shards data/shards] [--vocab assets/vocab.json] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import copy
import resource
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


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (loader workers, once closed)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


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


def train_rate(model, opt, batches, cfg) -> tuple[float, float, float]:
    """(samples/s, wall seconds, CPU seconds) of training on batches already in memory."""
    start, cpu = time.perf_counter(), cpu_seconds()
    for k, batch in enumerate(batches):
        train_micro(model, opt, batch, k, cfg.grad_accum)
    seconds = time.perf_counter() - start
    return sum(len(b) for b in batches) / seconds, seconds, cpu_seconds() - cpu


def train_with_loader(model, opt, tasks, sampler, cfg, micro: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to train on the loader's micro-batches; the CPU time counts the
    workers' whole lives but their start (the fork and the first batch: before `cpu`)."""
    loader = start_loader(tasks, sampler, cfg, micro, workers)
    start = cpu = 0.0
    try:
        start, cpu = time.perf_counter(), cpu_seconds()
        for k, (step, m) in enumerate(positions(cfg, micro)):
            train_micro(model, opt, loader.next(step, m)[1], k, cfg.grad_accum)
        seconds = time.perf_counter() - start
    finally:
        loader.close()
    return seconds, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--micro", type=int, default=12, help="micro-batches per timing")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=None, help="default: the params' train.num_workers")
    args = parser.parse_args()

    params = load_params(args.params)
    vocab = UnifiedVocab.load(args.vocab)
    cfg = run_config.train_config(params)
    workers = cfg.num_workers if args.workers is None else args.workers
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
    train_rate(model, opt, batches[: 2 * cfg.grad_accum], cfg)  # warm up

    capacity, slowdown, cpu_slowdown = [], [], []
    for r in range(args.rounds):
        rate_a, mem_a, cpu_a = train_rate(model, opt, batches, cfg)
        loader_sps = loader_rate(tasks, sampler, cfg, args.micro, workers)
        with_loader, cpu_loader = train_with_loader(model, opt, tasks, sampler, cfg, args.micro, workers)
        rate_b, mem_b, cpu_b = train_rate(model, opt, batches, cfg)
        capacity.append(loader_sps / ((rate_a + rate_b) / 2))
        slowdown.append(with_loader / ((mem_a + mem_b) / 2))
        cpu_slowdown.append(cpu_loader / ((cpu_a + cpu_b) / 2))
        print(f"round {r + 1}: loader {loader_sps:.0f} samples/s alone, training {rate_a:.0f}/{rate_b:.0f} "
              f"samples/s from memory; {args.micro} micro-batches in {mem_a:.2f}/{mem_b:.2f} s "
              f"(CPU {cpu_a:.2f}/{cpu_b:.2f} s) from memory, {with_loader:.2f} s (CPU {cpu_loader:.2f} s) "
              f"from the loader", flush=True)
    print(f"loader samples/s vs the model's training consumption (tiny model, CPU): {np.median(capacity):.1f}x "
          f"(goal >= 10x)")
    print(f"train step with the loader vs with batches already in memory: {np.median(slowdown):.3f}x "
          f"(goal <= 1.05x)")
    print(f"  the same in CPU time (training process + loader workers): {np.median(cpu_slowdown):.3f}x")


if __name__ == "__main__":
    main()
