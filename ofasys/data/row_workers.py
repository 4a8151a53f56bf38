"""Run a task's row chunks through `RowJob`s in worker processes, results in chunk order.

Decoding rows (images, audio features, VQ codes) is what materialisation spends its time on, and rows
are independent, so N processes decode N chunks at once while the calling process writes the results
in order (`ofasys.data.materialise`): the output is byte-identical to one process. Workers start with
the 'spawn' method (a fork of a process that has started torch's thread pools can hang), build their
`RowJob` once, and get the parent-death signal, so a killed run leaves no worker behind. At most
`AHEAD` chunks per worker are in flight, so memory stays bounded however large the split is.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

from ofasys.data.row_job import RowChunk, RowJob, RowOutcome, prepare

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ofasys.data.materialise_config import MaterialiseConfig

AHEAD = 3
"""Chunks in flight per worker: enough to keep every worker busy while the writer catches up."""

_worker_job: RowJob | None = None
"""This worker process's job, built once by `_init_worker` (worker processes only)."""


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _init_worker(cfg: "MaterialiseConfig", parent: int) -> None:
    global _worker_job
    _die_with_parent(parent)
    # One thread per worker, the workers being the parallelism (and features computed as the stage's
    # one-thread process computes them): torch takes its thread count from here when a modality
    # first imports it (audio features); importing it now would add seconds to every worker's start
    # for tasks that never use it.
    os.environ["OMP_NUM_THREADS"] = "1"
    _worker_job = RowJob(cfg, prepare(cfg))
    _one_thread()


def _one_thread() -> None:
    """One torch thread, when torch was imported before OMP_NUM_THREADS was set (by the main module
    the worker re-imports)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _run_chunk(chunk: RowChunk) -> list[RowOutcome]:
    assert _worker_job is not None, "worker not initialised"
    _one_thread()
    return _worker_job(chunk)


class RowWorkers:
    """`map(chunks)` yields each chunk's outcomes in chunk order; a context manager (stops workers)."""

    def __init__(self, cfg: "MaterialiseConfig", job: RowJob):
        self.job = job
        self.num_workers = cfg.num_workers
        self._pool: ProcessPoolExecutor | None = None
        if self.num_workers > 1:
            self._pool = ProcessPoolExecutor(self.num_workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(cfg, os.getpid()))

    def map(self, chunks: Iterable[RowChunk]) -> Iterator[list[RowOutcome]]:
        if self._pool is None:
            for chunk in chunks:
                yield self.job(chunk)
            return
        pending: collections.deque[Future] = collections.deque()
        limit = AHEAD * self.num_workers
        for chunk in chunks:
            pending.append(self._pool.submit(_run_chunk, chunk))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "RowWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["AHEAD", "RowWorkers"]
