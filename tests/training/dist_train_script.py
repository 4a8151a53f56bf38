"""Run under `torchrun --nproc_per_node 2`: train the fake model on CPU/gloo, twice.

1. A straight run of `--steps` steps in OUT/straight.
2. A run in OUT/resumed that dies (an exception on every rank at the same micro-step, like a
   crashed node) after its checkpoint at `--save-every`, then restarts in the same process group
   and finishes.
Each rank writes OUT/rank<r>.json with both histories and the TCP sockets it listened on during the
straight run; tests/training/test_dist.py checks them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch.distributed as dist  # noqa: E402

from ofasys.training import TrainConfig, Trainer  # noqa: E402
from tests.training.fakes import CollateHookTask, FakeModel, FakeTaskData  # noqa: E402
from tests.training.sockets import descendants, listening  # noqa: E402


class Crash(RuntimeError):
    pass


class CrashingTask(CollateHookTask):
    """Wraps a task; the shared counter raises on the k-th collate of this rank (same on all ranks,
    because every rank runs the same task at every micro-step)."""

    def __init__(self, task: FakeTaskData, counter: dict, crash_at: int | None) -> None:
        super().__init__(task, counter)
        self.crash_at = crash_at

    def on_collate(self, n: int) -> None:
        if n == 2 and "listening" not in self.counter:  # mid-run, DeepSpeed is up
            self.counter["listening"] = listening(descendants(os.getpid()))
        if self.crash_at is not None and n == self.crash_at:
            raise Crash(f"simulated crash at collate {n}")


def tasks(crash_at: int | None = None, counter: dict | None = None) -> list[CrashingTask]:
    counter = {"n": 0} if counter is None else counter
    sizes = {"caption": 1000, "grounding": 800, "vqa": 600}
    return [CrashingTask(FakeTaskData(n, size, seed=k), counter, crash_at) for k, (n, size) in enumerate(sizes.items())]


def history(result) -> list[dict]:
    return [dict(step=r.step, micro=r.micro, task=r.task, loss=r.loss, indices=list(r.indices))
            for r in result.history]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--vocab", type=Path, default=None)
    args = parser.parse_args()
    # num_workers=0: the collate hooks act in the training process
    config = TrainConfig(max_steps=args.steps, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2,
                         warmup_steps=2, log_every=1, save_every=args.save_every, keep_last=2, seed=5,
                         num_workers=0)
    weights = {"caption": 0.5, "grounding": 0.3, "vqa": 0.2}
    logs: list = []

    probe: dict = {"n": 0}

    def make(crash_at=None, out="straight", counter=None):
        return Trainer(FakeModel(dropout=0.1), tasks(crash_at, counter), weights, config, args.out / out,
                       lambda step, metrics: logs.append([step, metrics]), vocab_path=args.vocab,
                       model_config={"d": 16}, record_samples=True)

    straight = make(counter=probe).fit()
    crash_at = args.save_every + 2  # micro-step inside the step after the first checkpoint
    try:
        make(crash_at, "resumed").fit()
        raise AssertionError("the crash did not happen")
    except Crash:
        pass
    resumed = make(None, "resumed").fit()
    rank = dist.get_rank()
    report = dict(rank=rank, world_size=straight.world_size, init_seconds=straight.init_seconds,
                  straight=history(straight), resumed=history(resumed),
                  resumed_from=resumed.resumed_from, listening=probe["listening"],
                  export_dir=None if straight.export_dir is None else str(straight.export_dir), logs=logs)
    (args.out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
