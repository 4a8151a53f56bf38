"""While a real training run is in progress, its processes listen on loopback addresses only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ofasys.training.process_group import free_localhost_port, loopback_interface, loopback_literal

from .sockets import descendants, is_loopback, listening

SCRIPT = Path(__file__).with_name("listen_train_script.py")
REPO = Path(__file__).resolve().parents[2]
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TORCHELASTIC_USE_AGENT_STORE")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def sockets_during_training(out: Path, envs: list[dict[str, str]]):
    """Start one process per env, wait until every rank is paused mid-training, read the listening
    sockets of the processes and their children, let them finish."""
    logs = [open(out / f"log-{r}.txt", "w") for r in range(len(envs))]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(out)], env=env, cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT) for env, log in zip(envs, logs)]
    try:
        deadline = time.monotonic() + 240
        while not all((out / f"ready-{r}").exists() for r in range(len(envs))):
            failed = [p for p in procs if p.poll() is not None]
            assert not failed and time.monotonic() < deadline, \
                "training did not reach the pause:\n" + "\n".join((out / f"log-{r}.txt").read_text()[-3000:]
                                                                  for r in range(len(envs)))
            time.sleep(0.1)
        infos = [json.loads((out / f"ready-{r}").read_text()) for r in range(len(envs))]
        assert sorted(i["pid"] for i in infos) == sorted(p.pid for p in procs)
        found = listening([pid for p in procs for pid in descendants(p.pid)])
    finally:
        (out / "checked").touch()
        for p in procs:
            try:
                p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    for r, p in enumerate(procs):
        assert p.returncode == 0, (out / f"log-{r}.txt").read_text()[-3000:]
    return found, infos


def test_single_process_run_listens_on_loopback_only(tmp_path):
    found, infos = sockets_during_training(tmp_path, [base_env()])
    assert found, "gloo always listens; finding nothing means the wrong processes were inspected"
    assert all(is_loopback(address) for _, address, _ in found), found
    assert infos[0]["gloo_ifname"] == loopback_interface()


@pytest.mark.slow
def test_two_process_run_listens_on_loopback_only(tmp_path):
    """Launched like the `deepspeed` launcher does (env only, no torchrun agent): rank 0 hosts the
    rendezvous store itself, and it must not bind all interfaces."""
    port = free_localhost_port()
    envs = [{**base_env(), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)} for r in (0, 1)]
    found, infos = sockets_during_training(tmp_path, envs)
    assert all(is_loopback(address) for _, address, _ in found), found
    rank0 = infos[0]["pid"]
    assert (rank0, "127.0.0.1", port) in found  # the store, served by rank 0 on loopback
    assert all(info["gloo_ifname"] == loopback_interface() for info in infos)


def test_loopback_literals():
    assert loopback_literal("localhost") == "127.0.0.1"
    assert loopback_literal("127.0.0.1") == "127.0.0.1" and loopback_literal("::1") == "::1"
    assert loopback_literal("[::1]") == "::1"
    # Host names (even this machine's) and real addresses mean a launch across machines.
    assert loopback_literal("10.1.2.3") is None and loopback_literal("node-0") is None
    assert loopback_literal("") is None
