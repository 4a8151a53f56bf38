"""A batch as one buffer, for the trip from a loader worker to the training process.

torch's multiprocessing moves every tensor of a batch through its own shared-memory segment: the
worker creates and maps one, the training process receives its file descriptor over a socket and maps
it again, per tensor. A batch has six to a dozen small tensors (ids, masks, targets, an image or
fbank stack), so that bookkeeping cost the training process ~2.5 ms a batch and the worker more than
collating did. Packed, a batch crosses as one uint8 tensor (one segment) plus a picklable shell; the
training process rebuilds the tensors as views of it (no copy), and pinning for a CUDA host is one
`pin_memory` of the buffer.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

ALIGN = 64
"""Byte alignment of each tensor in the buffer: any dtype may be viewed at such an offset."""


@dataclass(frozen=True)
class _TensorRef:
    """Stands in the shell for the tensor `specs[index]` of the buffer."""

    index: int


def _map_tensors(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """`obj` with every tensor (and `_TensorRef`) `t` inside dataclasses, lists and tuples replaced by
    `fn(t)`; anything else is kept as it is (shared, not copied)."""
    if isinstance(obj, (torch.Tensor, _TensorRef)):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(out, f.name, _map_tensors(getattr(obj, f.name), fn))
        return out
    if isinstance(obj, list):
        return [_map_tensors(x, fn) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_map_tensors(x, fn) for x in obj)
    return obj


@dataclass
class PackedBatch:
    """A batch whose tensors all live in `buffer`: `shell` holds `_TensorRef`s where they were."""

    shell: Any
    specs: tuple[tuple[torch.dtype, tuple[int, ...], int, int], ...]
    """(dtype, shape, byte offset, byte size) of each tensor, in `_TensorRef` order."""
    buffer: torch.Tensor
    """uint8, every tensor's bytes at its offset."""

    @classmethod
    def of(cls, batch: Any) -> "PackedBatch":
        tensors: list[torch.Tensor] = []

        def take(t: torch.Tensor) -> _TensorRef:
            tensors.append(t.contiguous())
            return _TensorRef(len(tensors) - 1)

        shell = _map_tensors(batch, take)
        specs, offset = [], 0
        for t in tensors:
            size = t.numel() * t.element_size()
            specs.append((t.dtype, tuple(t.shape), offset, size))
            offset += -(-size // ALIGN) * ALIGN
        buffer = torch.empty(offset, dtype=torch.uint8)
        for t, (dtype, shape, start, size) in zip(tensors, specs):
            _view(buffer, dtype, shape, start, size).copy_(t)
        return cls(shell, tuple(specs), buffer)

    def unpack(self) -> Any:
        """The batch, its tensors views of the buffer."""
        return _map_tensors(self.shell, lambda ref: _view(self.buffer, *self.specs[ref.index]))

    def pin_memory(self) -> "PackedBatch":
        return PackedBatch(self.shell, self.specs, self.buffer.pin_memory())


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...], start: int, size: int) -> torch.Tensor:
    return buffer[start: start + size].view(dtype).view(shape)
