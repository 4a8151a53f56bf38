"""Two ranks over gloo on CPU via torchrun: same task per step, disjoint samples, exact resume,
loopback-only sockets."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofasys.training import load_pretrained_state
from ofasys.training.process_group import free_localhost_port

from .fakes import FakeModel, make_vocab

SCRIPT = Path(__file__).with_name("dist_train_script.py")
REPO = Path(__file__).resolve().parents[2]


def r0_init(tmp_path: Path) -> float:
    return json.loads((tmp_path / "rank0.json").read_text())["init_seconds"]


@pytest.mark.slow
def test_two_rank_training_with_torchrun(tmp_path):
    make_vocab(tmp_path / "vocab.json")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_localhost_port()),
           str(SCRIPT), "--out", str(tmp_path), "--steps", "8", "--save-every", "3",
           "--vocab", str(tmp_path / "vocab.json")]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(f"\ndeepspeed.initialize took {r0_init(tmp_path):.2f} s on rank 0 (first engine of the process)")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    s0, s1 = r0["straight"], r1["straight"]
    assert len(s0) == len(s1) == 8
    # Same task at every step on both ranks; disjoint samples (no task wraps its epoch in 8 steps).
    assert [m["task"] for m in s0] == [m["task"] for m in s1]
    for task in {m["task"] for m in s0}:
        seen0 = {i for m in s0 if m["task"] == task for i in m["indices"]}
        seen1 = {i for m in s1 if m["task"] == task for i in m["indices"]}
        assert seen0 and seen1 and not seen0 & seen1, task
    assert all(math.isfinite(m["loss"]) for m in s0 + s1)
    # Metrics reach log_fn on rank 0 only, averaged over ranks.
    # straight 1..8, the crashed run 1..4 (dies in step 5), the restart 4..8 (from checkpoint 3)
    assert [s for s, _ in r0["logs"]] == [*range(1, 9), *range(1, 5), *range(4, 9)]
    assert all(math.isfinite(m["train/loss"]) for _, m in r0["logs"])
    assert r1["logs"] == []
    # Resume after a crash continues each rank's exact sequence.
    for r in (r0, r1):
        assert r["resumed_from"] == 3
        tail = [m for m in r["straight"] if m["step"] > 3]
        assert r["resumed"] == tail
    # The ranks listen on loopback only (gloo; torchrun's agent, not our process, hosts the store).
    for r in (r0, r1):
        assert r["listening"] and all(ipaddress.ip_address(addr).is_loopback for _, addr, _ in r["listening"])
    # Rank 0 exported; the weights load into the model.
    state = load_pretrained_state(r0["export_dir"])
    FakeModel().load_state_dict(state, strict=True)
    assert r1["export_dir"] is None
