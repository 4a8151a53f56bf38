"""Raw-row provenance: where a raw row came from, and where its relative media paths point.

`ingest` writes three columns into every raw parquet (contracts C1): `__source__` (the source file as
ingest resolved it, or "demo:<generator>"), `__source_row__` (the row's record index in that file)
and `__source_id__` (the source's id column, or null). They are never data: materialisation reads
them only to name rejected rows so a user can find them in their own file, and to resolve relative
media paths against the source file's directory (contracts C2), which is where a user writes them
relative to. Raw parquets without these columns (older data, hand-made tables) still work: the
fields are then None and relative paths fall back to the raw parquet's own directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = "__source__"
SOURCE_ROW = "__source_row__"
SOURCE_ID = "__source_id__"
PROVENANCE_COLUMNS = (SOURCE, SOURCE_ROW, SOURCE_ID)
"""Columns ingest adds to every raw row; never data columns."""

DEMO_PREFIX = "demo:"
"""`__source__` of generated rows ("demo:<generator>"): no file, so no directory to resolve against."""


def data_columns(names: Iterable[str]) -> list[str]:
    """`names` without the provenance columns (what an instruction may bind to)."""
    return [n for n in names if n not in PROVENANCE_COLUMNS]


@dataclass(frozen=True)
class Provenance:
    """Where one raw row came from (all None for raw data without provenance columns)."""

    source: str | None = None
    source_row: int | None = None
    source_id: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "Provenance":
        source, row, ident = values.get(SOURCE), values.get(SOURCE_ROW), values.get(SOURCE_ID)
        return cls(
            None if source is None else str(source),
            None if row is None else int(row),
            None if ident is None else str(ident),
        )


class MediaBase:
    """The directory relative media paths of a row are resolved against (contracts C2).

    A file source's rows resolve against the directory of their `__source__` file; a relative
    `__source__` is first made absolute against `cwd` (the materialise process's working directory,
    the project directory under DVC). Demo rows and rows without `__source__` use `fallback`, the raw
    parquet's own directory. Results are cached per source: a split usually has one or a few.
    """

    def __init__(self, fallback: Path | None, cwd: str | os.PathLike | None = None):
        self.fallback = fallback
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self._cache: dict[str, Path | None] = {}

    def __call__(self, source: str | None) -> Path | None:
        if not source or source.startswith(DEMO_PREFIX):
            return self.fallback
        base = self._cache.get(source)
        if base is None:
            path = Path(source)
            if not path.is_absolute():
                path = self.cwd / path
            base = self._cache[source] = path.parent
        return base


__all__ = [
    "DEMO_PREFIX",
    "MediaBase",
    "PROVENANCE_COLUMNS",
    "Provenance",
    "SOURCE",
    "SOURCE_ID",
    "SOURCE_ROW",
    "data_columns",
]
