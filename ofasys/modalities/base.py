"""What every modality encoder shares: the row context, the result type and the reject signal.

An encoder turns one raw cell into the array stored in the shard. Everything that is the same every
epoch happens here, once; randomness per epoch (span masking, noise) is left to collation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ofasys.vocab import UnifiedVocab


class RejectRow(Exception):
    """A raw value that can't be materialised; the row goes to rejects.jsonl with `reason`.

    Reasons must be deterministic text (no object reprs or addresses): rejects.jsonl is part of the
    byte-identical output.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RowContext:
    """What an encoder may need beyond its own cell."""

    vocab: UnifiedVocab
    image_size: int
    base_dir: Path | None = None
    """Directory relative image paths are resolved against: the directory of the row's source file
    (contracts C2), or the raw parquet's directory for rows without one (demo rows, older data)."""
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Original (width, height) of this row's decoded image columns, filled as images are decoded."""
    box_image_column: str | None = None
    """The image column whose pixels BOX coordinates are in."""


@dataclass(frozen=True)
class Materialised:
    array: np.ndarray
    meta: Mapping[str, Any] | None = None
    """Per-column metadata recorded in the sample json (e.g. original image width/height)."""
    ref: Any = None
    """JSON-able raw value recorded in `refs` when the column is on the output side."""


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN
        return True
    return False
