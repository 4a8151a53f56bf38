"""Running sums over a frame-output array's rows, for the per-feature statistics its targets are
normalised by (the manifest's `frame_stats`).

A row's contribution (`FramePart`) is computed where the row is materialised, possibly in a worker
process, and added in row order by the process writing the manifest: float64 sums added in the same
order give the same figures whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FramePart:
    """One kept row's contribution to a `FrameSums`."""

    count: int
    """Stored rows (frames) of the array."""
    total: np.ndarray
    """float64 per-feature sum over the array's rows."""
    squares: np.ndarray
    """float64 per-feature sum of squares."""
    steps: int
    """Decoder steps the array takes (`handler.frame_steps`)."""
    seconds: float | None
    """The clip's `frame_seconds` meta, when it records one."""

    @classmethod
    def of(cls, handler: Any, array: np.ndarray, meta: Mapping[str, Any]) -> "FramePart":
        """The contribution of one stored array and its column's meta."""
        rows = np.asarray(array, np.float64)
        seconds = float(meta["frame_seconds"]) if meta.get("frame_seconds") else None
        return cls(int(rows.shape[0]), rows.sum(0), (rows * rows).sum(0), int(handler.frame_steps(array)), seconds)


class FrameSums:
    """Running sums over one frame-output array's rows, in row order (float64: the same figures on every
    machine), for the per-feature mean and std the model's frame targets are normalised by."""

    STD_FLOOR = 1e-3
    """The smallest std recorded: a feature constant over the train split (a padding column) is left
    as it is rather than blown up."""

    def __init__(self, handler: Any, column: str):
        self.handler, self.column = handler, column
        self.count = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.max_steps = 0
        self.seconds: list[float] = []

    def part(self, array: np.ndarray, meta: Mapping[str, Any]) -> FramePart:
        return FramePart.of(self.handler, array, meta)

    def add(self, array: np.ndarray, meta: Mapping[str, Any]) -> None:
        """One kept row's stored array, and its column's meta (a clip's `frame_seconds`)."""
        self.merge(self.part(array, meta))

    def merge(self, part: FramePart) -> None:
        """Add one kept row's contribution (rows must be merged in row order)."""
        if part.seconds is not None:
            self.seconds.append(part.seconds)
        if self.total is None:
            self.total, self.squares = np.zeros(part.total.shape[0]), np.zeros(part.total.shape[0])
        self.count += part.count
        self.total += part.total
        self.squares += part.squares
        self.max_steps = max(self.max_steps, part.steps)

    def stats(self) -> dict[str, Any] | None:
        """{"mean", "std", "max_steps"} rounded to 6 decimals, or None when no row was kept."""
        if not self.count:
            return None
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean * mean, 0.0))
        stats = {"mean": [round(float(x), 6) for x in mean],
                 "std": [round(float(x), 6) for x in np.maximum(std, self.STD_FLOOR)],
                 "max_steps": int(self.max_steps)}
        if self.seconds:  # how long a generated frame lasts (a motion clip's playback rate)
            stats["frame_seconds"] = round(float(np.median(self.seconds)), 6)
        return stats


__all__ = ["FramePart", "FrameSums"]
