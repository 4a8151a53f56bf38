"""The allowed-id sets of a search as one table of vocabulary masks on the model's device.

Every set any sample's plan may ask for is known before the search starts (`OutputPlan.mask_parts`),
so the table is built once, with one row per distinct set (samples of a task share theirs: rows are
deduplicated by the sets' parts), and each step gathers one row per hypothesis by index on the
device: no mask is made on the host while searching. Row 0 allows every id (an unconstrained
sample, and rows of dead hypotheses, whose running score is already -inf).

A constraint that only answers `allowed(generated)` (no cursor) cannot list its sets up front; its
sets are added as they first appear, each written once on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Part = range | tuple[int, ...]

ANY = 0
"""Row of the set of every id."""


class MaskTable:
    """Rows of allowed ids: `add` sets (as parts) before `build`, then `rows` is the bool
    (sets x vocabulary) tensor the search gathers from."""

    def __init__(self) -> None:
        self._index: dict[tuple, int] = {("any",): ANY}
        self._pending: list[tuple[Part, ...]] = [()]
        self.rows: torch.Tensor | None = None
        self.vocab_size = 0

    def add(self, parts: Sequence[Part]) -> int:
        """The row of the set made of `parts` (ranges or id tuples), new or shared with an equal one."""
        key = tuple(parts)
        row = self._index.get(key)
        if row is None:
            if self.rows is not None:
                raise RuntimeError("the mask table is already built; add every set before the search starts")
            row = self._index[key] = len(self._pending)
            self._pending.append(key)
        return row

    def build(self, vocab_size: int, device: torch.device) -> None:
        """Write every set added so far, once, and move the table to `device`."""
        table = torch.zeros((len(self._pending), vocab_size), dtype=torch.bool)
        table[ANY] = True
        for row, parts in enumerate(self._pending[1:], start=1):
            for part in parts:
                _write(table[row], part, vocab_size)
        self.rows, self.vocab_size = table.to(device), vocab_size

    def row_of_ids(self, ids: Sequence[int] | None) -> int:
        """The row of an explicit id list (None: every id), added to the built table when new."""
        if ids is None:
            return ANY
        key = ("ids", tuple(int(t) for t in ids))
        row = self._index.get(key)
        if row is None:
            assert self.rows is not None, "build the table first"
            new = torch.zeros((1, self.vocab_size), dtype=torch.bool, device=self.rows.device)
            if key[1]:
                _check(key[1], self.vocab_size)
                new[0, torch.as_tensor(key[1], dtype=torch.long, device=self.rows.device)] = True
            row = self._index[key] = len(self.rows)
            self.rows = torch.cat([self.rows, new])
        return row


def _check(ids: Sequence[int], vocab_size: int) -> None:
    low, high = min(ids), max(ids)
    if low < 0 or high >= vocab_size:
        raise ValueError(f"allowed id {high if high >= vocab_size else low} is outside the model's "
                         f"vocabulary of {vocab_size} ids")


def _write(row: torch.Tensor, part: Part, vocab_size: int) -> None:
    if not len(part):
        return
    if isinstance(part, range) and part.step == 1:
        _check((part.start, part.stop - 1), vocab_size)
        row[part.start : part.stop] = True
    else:
        ids = tuple(part)
        _check(ids, vocab_size)
        row[torch.as_tensor(ids, dtype=torch.long)] = True
