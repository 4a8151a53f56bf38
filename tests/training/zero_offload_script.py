"""Run under `torchrun --nproc_per_node 2`: train the fake model on CPU/gloo with ZeRO stage 0, then
with each of the stage/offload settings given, and write each rank's losses to OUT/rank<r>.json
(tests/training/test_zero_offload_dist.py compares them)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch.distributed as dist  # noqa: E402

from ofasys.training import TrainConfig, Trainer  # noqa: E402
from tests.training.fakes import FakeModel, make_tasks  # noqa: E402

SETTINGS = {
    "z0": {"zero_stage": 0},
    "z2_offload": {"zero_stage": 2, "offload_optimizer": "cpu"},
    "z3_offload": {"zero_stage": 3, "offload_optimizer": "cpu", "offload_params": "cpu"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    losses = {}
    for name in args.settings:
        config = TrainConfig(max_steps=4, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2, warmup_steps=2,
                             grad_accum=2, log_every=2, save_every=0, seed=5, **SETTINGS[name])
        result = Trainer(FakeModel(dropout=0.1), make_tasks(), None, config, args.out / name).fit()
        losses[name] = [r.loss for r in result.history]
    rank = dist.get_rank()
    (args.out / f"rank{rank}.json").write_text(json.dumps(losses))
    dist.barrier()


if __name__ == "__main__":
    main()
