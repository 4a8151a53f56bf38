"""ZeRO-2 and ZeRO-3 with optimizer (and parameter) offload to the host, on two gloo ranks: the same
losses as plain data parallel (stage 0), on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofasys.training.process_group import free_localhost_port

SCRIPT = Path(__file__).with_name("zero_offload_script.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_with_zero_offload_match_stage_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_localhost_port()), str(SCRIPT), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for rank in (0, 1):
        losses = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(losses) == {"z0", "z2_offload", "z3_offload"}
        assert len(losses["z0"]) == 8
        for name in ("z2_offload", "z3_offload"):
            assert losses[name] == pytest.approx(losses["z0"], rel=1e-5), (rank, name)
