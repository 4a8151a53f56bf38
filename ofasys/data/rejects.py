"""Rows that could not be materialised, and the budget that decides when that is a failure.

Real data has bad rows (an undecodable image, a box outside its image). Dropping a few is fine and
recorded; dropping many means the data or the instruction is wrong, so the stage stops and says so
with the counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ofasys.data.io import atomic_write_bytes, canonical_json


@dataclass(frozen=True)
class Reject:
    """One rejected row. `split`/`row` locate it in the raw parquet; `source`, `source_row` and
    `source_id` (contracts C1) locate it in the user's own file, which is what they can open and fix.
    The provenance fields are None for raw data without provenance columns and are then left out of
    rejects.jsonl."""

    split: str
    row: int
    """Index of the row within its raw split (also the sample key's number)."""
    column: str
    reason: str
    source: str | None = None
    """The raw row's `__source__`: its source file as ingest resolved it, or "demo:<generator>"."""
    source_row: int | None = None
    """The raw row's `__source_row__`: its 0-based record index in `source`."""
    source_id: str | None = None
    """The raw row's `__source_id__`: the value of the source's id column."""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _OPTIONAL}


_OPTIONAL = frozenset({"source", "source_row", "source_id"})


@dataclass(frozen=True)
class RejectBudget:
    """How many rejected rows a split may have. A split passes when it is within EITHER allowance:
    `max_fraction` of its rows, or `max_count` rows (so a tiny split isn't failed by one bad row when
    a count is given). None disables an allowance; both None means no rejects allowed."""

    max_fraction: float | None = 0.01
    max_count: int | None = None

    @classmethod
    def of(cls, value: "RejectBudget | float | int | Mapping | None") -> "RejectBudget":
        """Accept the forms params use: a fraction (float), a count (int), a mapping, or a budget."""
        if isinstance(value, RejectBudget):
            return value
        if value is None:
            return cls(None, None)
        if isinstance(value, Mapping):
            return cls(**value)
        if isinstance(value, bool):
            raise TypeError("reject budget must be a fraction, a count or a RejectBudget, not a bool")
        if isinstance(value, int):
            return cls(None, value)
        return cls(float(value), None)

    def allows(self, rejected: int, total: int) -> bool:
        if rejected == 0:
            return True
        ok = False
        if self.max_fraction is not None:
            ok |= rejected <= self.max_fraction * total
        if self.max_count is not None:
            ok |= rejected <= self.max_count
        return ok

    def describe(self) -> str:
        parts = []
        if self.max_fraction is not None:
            parts.append(f"{self.max_fraction:.2%} of a split's rows")
        if self.max_count is not None:
            parts.append(f"{self.max_count} rows")
        return " or ".join(parts) if parts else "no rejects"


class RejectBudgetExceeded(RuntimeError):
    """More rows were rejected than the budget allows. `.counts` = {split: (rejected, total)}."""

    def __init__(self, task: str, counts: Mapping[str, tuple[int, int]], budget: RejectBudget, rejects_path: str):
        self.task = task
        self.counts = dict(counts)
        self.budget = budget
        self.rejects_path = rejects_path
        over = [s for s, (r, t) in self.counts.items() if not budget.allows(r, t)]
        lines = [
            f"task {task!r}: rejected rows exceed the budget ({budget.describe()}) in split(s) {over}:",
            *(
                f"  {s}: {r}/{t} rows rejected ({(r / t if t else 0):.2%})" + ("  <- over budget" if s in over else "")
                for s, (r, t) in self.counts.items()
            ),
            f"see {rejects_path} for each row's reason; fix the data or raise the reject budget",
        ]
        super().__init__("\n".join(lines))


def write_rejects(path: str | os.PathLike, rejects: Iterable[Reject]) -> int:
    """rejects.jsonl, one JSON object per line, atomically; returns the number written."""
    lines = [canonical_json(r.to_json()) + "\n" for r in rejects]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    return len(lines)


def read_rejects(path: str | os.PathLike) -> list[Reject]:
    text = Path(path).read_text(encoding="utf-8")
    return [Reject(**json.loads(line)) for line in text.splitlines() if line.strip()]
