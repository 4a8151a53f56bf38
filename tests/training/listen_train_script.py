"""A training process that pauses mid-run so a test can look at the sockets it listens on.

Run as a plain process (one rank) or with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set (several).
On its 3rd collate (inside `Trainer.fit`, after DeepSpeed is up and steps have run) each rank
writes OUT/ready-<rank> (JSON: its pid and GLOO_SOCKET_IFNAME) and waits for OUT/checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ofasys.training import TrainConfig, Trainer  # noqa: E402
from tests.training.fakes import CollateHookTask, FakeModel, FakeTaskData  # noqa: E402


class PausingTask(CollateHookTask):
    """Stops at its 3rd collate (DeepSpeed is up) until the test has looked at the sockets."""

    def __init__(self, task: FakeTaskData, out: Path, counter: dict) -> None:
        super().__init__(task, counter)
        self.out = out

    def on_collate(self, n: int) -> None:
        if n != 3:
            return
        rank = os.environ.get("RANK", "0")
        info = {"pid": os.getpid(), "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME")}
        (self.out / f"ready-{rank}").write_text(json.dumps(info))
        deadline = time.monotonic() + 120
        while not (self.out / "checked").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never looked at the sockets")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    counter = {"n": 0}
    tasks = [PausingTask(FakeTaskData(name, 200, seed=k), args.out, counter)
             for k, name in enumerate(("caption", "vqa"))]
    # num_workers=0: the collate hooks act in the training process
    config = TrainConfig(max_steps=5, max_tokens=128, max_batch_size=8, pool_size=32, warmup_steps=1,
                         log_every=5, save_every=0, seed=2, num_workers=0)
    Trainer(FakeModel(), tasks, None, config, args.out / "run").fit()


if __name__ == "__main__":
    main()
