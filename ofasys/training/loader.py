"""The training data loader: samples read and collated in worker processes, ahead of the step.

Reading shards and collating (image resizing, fbank padding, masking) on the training thread puts
that time on every step; a `torch.utils.data.DataLoader` with worker processes does it while the
model runs. What must not change is *which* batches a rank trains on, and *what* they hold:

- The trainer's `WeightedMultitaskSampler` stays the single source of which samples a rank sees.
  The training process keeps the authoritative sampler, advanced exactly once per consumed
  micro-batch (it is cheap index arithmetic); it is what checkpoints save.
- The DataLoader's sampler is a look-ahead copy of it, taken when the loader is made (after any
  resume, so it restarts from the restored state). It enumerates `WorkItem`s (step, micro, task,
  indices, epoch) up to `max_steps`, running `num_workers x prefetch_factor` items ahead.
- A worker (or the training process itself with `num_workers=0`) reads the item's samples and
  collates them with the numpy RNG derived from (seed, step, micro, rank): a batch is a function of
  its item alone, whichever process makes it, so `num_workers` changes speed and never a loss.
  Torch's global RNG is not the collator's: any torch draw in a collate happens under a forked,
  item-seeded RNG, and the training process re-seeds torch per micro-batch itself.
- `TrainLoader.next` checks that the batch it got is for the item the authoritative sampler drew,
  and fails loudly otherwise (`LoaderDesyncError`), so a look-ahead bug cannot silently train on
  other samples than a resumed run would.

Batches cross processes through torch's multiprocessing reductions, packed first into one tensor
(`batch_transfer`): its storage moves to shared memory and only the small Python shell (keys,
per-sample meta) is pickled, between processes of this run only. Workers are forked (the DataLoader default on Linux), so tasks need not be picklable
and shard handles re-open per worker (`ShardTaskData` does so itself).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ofasys.data.batch import Batch, EncoderSegment
from ofasys.training.batch_transfer import PackedBatch
from ofasys.training.sampler import SampledBatch, WeightedMultitaskSampler
from ofasys.training.seeding import derive_seed

LOG = logging.getLogger(__name__)

COLLATE_TAG = 0x434F4C4C  # "COLL"
_COLLATE_TORCH_TAG = 0x43544F52  # "CTOR": torch draws inside a collate, apart from the model's


class LoaderDesyncError(RuntimeError):
    """The loader delivered a batch for another micro-step or other samples than the sampler drew."""


@dataclass(frozen=True)
class WorkItem:
    """One micro-batch to make: where it sits in training and which samples it holds."""

    step: int
    """0-based optimizer step (the loop's `step` before it is incremented)."""
    micro: int
    task: str
    indices: tuple[int, ...]
    epoch: int

    @classmethod
    def of(cls, step: int, micro: int, picked: SampledBatch) -> "WorkItem":
        return cls(step, micro, picked.task, tuple(int(i) for i in picked.indices), int(picked.epoch))


def collate_rng(seed: int, step: int, micro: int, rank: int) -> np.random.Generator:
    """The collate RNG of a micro-batch (stream-time masking, diffusion draws): a function of its
    place in training only, so a resumed run and any worker draw the same."""
    return np.random.default_rng([seed, step, micro, rank, COLLATE_TAG])


def make_batch(task: Any, item: WorkItem, seed: int, rank: int) -> Batch:
    """Read `item`'s samples from `task` and collate them as a training batch."""
    samples = [task.get(i) for i in item.indices]
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: that is all fork_rng(devices=[]) restores, and torch.manual_seed
        # also queues a seeding of every accelerator backend (~1 ms a call, a tenth of a batch).
        torch.default_generator.manual_seed(derive_seed(seed, item.step, item.micro, rank, _COLLATE_TORCH_TAG))
        return task.collate(samples, collate_rng(seed, item.step, item.micro, rank), True, epoch=item.epoch)


@dataclass
class Loaded:
    """What a worker hands back: the item and its batch, packed into one buffer when it crosses
    processes (`batch_transfer`); `pin_memory` for CUDA hosts."""

    item: WorkItem
    batch: Batch | PackedBatch

    def pin_memory(self) -> "Loaded":
        """Called by the DataLoader's pinning thread when `pin_memory=True`."""
        pinned = self.batch.pin_memory() if isinstance(self.batch, PackedBatch) else _pin_batch(self.batch)
        return Loaded(self.item, pinned)

    def unpacked(self) -> Batch:
        return self.batch.unpack() if isinstance(self.batch, PackedBatch) else self.batch


def _pin(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.pin_memory()


def _pin_batch(batch: Batch) -> Batch:
    out = copy.copy(batch)
    out.segments = [EncoderSegment(s.kind, s.tensor.pin_memory(), _pin(s.mask)) for s in batch.segments]
    out.decoder_input, out.target, out.loss_mask = (_pin(batch.decoder_input), _pin(batch.target),
                                                    _pin(batch.loss_mask))
    if batch.frames is not None:
        f = copy.copy(batch.frames)
        for name in ("index", "mask", "values", "noise", "level", "progress"):
            setattr(f, name, _pin(getattr(f, name)))
        out.frames = f
    return out


class _MicroBatches(Dataset):
    """Map-style view the DataLoader indexes with `WorkItem`s."""

    def __init__(self, tasks: Mapping[str, Any], seed: int, rank: int, pack: bool) -> None:
        self.tasks, self.seed, self.rank, self.pack = dict(tasks), seed, rank, pack

    def __getitem__(self, item: WorkItem) -> Loaded:
        batch = make_batch(self.tasks[item.task], item, self.seed, self.rank)
        return Loaded(item, PackedBatch.of(batch) if self.pack else batch)


class _LookAhead(Sampler):
    """The work items from `start_step` to `max_steps`, drawn from a copy of the sampler."""

    def __init__(self, sampler: WeightedMultitaskSampler, start_step: int, max_steps: int, grad_accum: int) -> None:
        self._sampler = copy.deepcopy(sampler)
        self.start_step, self.max_steps, self.grad_accum = start_step, max_steps, grad_accum

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[WorkItem]:
        sampler = copy.deepcopy(self._sampler)  # every pass starts at the state the loader was made with
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.grad_accum):
                yield WorkItem.of(step, micro, sampler.next_batch())


def _unwrap(loaded: Loaded) -> Loaded:
    return loaded


class TrainLoader:
    """Micro-batches for `Trainer.fit`, made ahead by `num_workers` processes; see the module docstring.

    Use as a context manager (or call `close()`): the workers stop when training ends or fails.
    """

    def __init__(self, tasks: Mapping[str, Any], sampler: WeightedMultitaskSampler, *, seed: int, rank: int,
                 start_step: int, max_steps: int, grad_accum: int, num_workers: int, prefetch_factor: int,
                 pin_memory: bool = False) -> None:
        self.sampler = sampler
        """The authoritative sampler: advanced once per batch handed out, saved by checkpoints."""
        look_ahead = _LookAhead(sampler, start_step, max_steps, grad_accum)
        if not len(look_ahead):  # nothing left to train (a finished run restarted): start no process
            num_workers = 0
        self.num_workers = num_workers
        workers = num_workers > 0
        if workers:  # index the shards once, here, for every worker to inherit
            for task in tasks.values():
                index = getattr(task, "index_shards", None)
                if index is not None:
                    index()
        self._loader = DataLoader(
            _MicroBatches(tasks, seed, rank, pack=workers),
            batch_size=None,
            sampler=look_ahead,
            collate_fn=_unwrap,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=workers,
            pin_memory=pin_memory,
            # the workers' own torch seeds come from this, not from the training process's RNG
            generator=torch.Generator().manual_seed(derive_seed(seed, rank, 0, 0, COLLATE_TAG)),
        )
        self._it: Iterator[Loaded] | None = iter(self._loader)

    def next(self, step: int, micro: int) -> tuple[SampledBatch, Batch]:
        """The micro-batch `micro` of 0-based optimizer step `step`, as the sampler draws it now."""
        if self._it is None:
            raise RuntimeError("the loader is closed")
        picked = self.sampler.next_batch()
        want = WorkItem.of(step, micro, picked)
        try:
            loaded = next(self._it)
        except StopIteration:
            raise LoaderDesyncError(f"the loader ran out before step {step} micro {micro}; it was made for "
                                    f"fewer steps than the training loop runs") from None
        if loaded.item != want:
            raise LoaderDesyncError(f"the loader made {loaded.item} but the sampler drew {want}: the "
                                    f"look-ahead copy diverged from the training sampler")
        return picked, loaded.unpacked()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty with num_workers=0)."""
        workers = getattr(self._it, "_workers", None) or []
        return [w.pid for w in workers if w.pid is not None]

    def close(self) -> None:
        """Stop the workers now (rather than whenever the iterator is garbage collected)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)  # the multi-process iterator's own clean-up
        if shutdown is not None:
            shutdown()
        self._loader = None  # type: ignore[assignment]  # drops the persistent iterator's reference

    def __enter__(self) -> "TrainLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
