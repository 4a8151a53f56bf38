"""Verify the training data's files once per run, before training, instead of once per process.

A task reader that hashes each shard on first open does so in every rank and, with loader workers,
in every worker: the same bytes hashed `ranks x (1 + workers)` times, mid-training. Here one process
per machine (local rank 0; on one machine, rank 0) hashes every shard and lengths file of every task
up front, every rank learns the verdict through one collective, and all then open shards without
hashing (the structure check, the sample count of each shard's tar index, still runs on open).

A corrupted shard therefore stops the run before its first step, with the verifying process raising
the file's error and every other rank a `DataCheckError` pointing at it (no rank waits forever).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Protocol, runtime_checkable

import torch
import torch.distributed as dist

LOG = logging.getLogger(__name__)


class DataCheckError(RuntimeError):
    """Another process found a training data file that differs from its manifest."""


@runtime_checkable
class VerifiableTask(Protocol):
    """A task whose files can be hashed up front (`ShardTaskData`)."""

    def verify_files(self) -> None: ...

    def assume_verified(self) -> None: ...


def verifies_here(rank: int) -> bool:
    """Whether this process hashes the files: the machine's local rank 0 (checkpoints already need a
    shared filesystem; data on node-local disks is then still checked on every node)."""
    return int(os.environ.get("LOCAL_RANK", rank)) == 0


def verify_once(tasks: Iterable[Any], rank: int, world: int, device: torch.device) -> None:
    """Verify every `VerifiableTask` in `tasks` on the verifying process of each machine, then mark
    them verified everywhere. Collective when `world > 1`: every rank must call it."""
    checkable = [t for t in tasks if isinstance(t, VerifiableTask)]
    here = verifies_here(rank)
    error: BaseException | None = None
    if here:
        try:
            for task in checkable:
                task.verify_files()
        except Exception as err:  # re-raised below, after the other ranks learned of it
            error = err
    if world > 1:
        failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if error is None and int(failed.item()):
            raise DataCheckError(f"rank {rank}: a training data file differs from its manifest; the "
                                 f"verifying rank's error names it. Training did not start")
    if error is not None:
        raise error
    for task in checkable:
        task.assume_verified()
    if here and checkable:
        LOG.info("verified the files of %d task splits", len(checkable))
