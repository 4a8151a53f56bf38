"""BOX: "x0,y0,x1,y1" or 4 numbers in pixels of the row's image -> 4 unified `<bin_i>` ids.

A coordinate becomes bin round(x / size * (num_bins - 1)) with size the image's ORIGINAL width or
height, so bins are fractions of the image and survive any resize. De-quantising maps bin b back to
b / (num_bins - 1) * size: the round trip is within half a bin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np

from ofasys.modalities.base import Materialised, RejectRow, RowContext, is_missing

_SEP = re.compile(r"[,\s]+")


def parse_box(value: Any) -> list[float]:
    """4 finite floats from a "x0,y0,x1,y1" string (commas and/or spaces) or a sequence; else RejectRow."""
    if is_missing(value):
        raise RejectRow("missing box")
    if isinstance(value, str):
        parts = [p for p in _SEP.split(value.strip().strip("[]()")) if p]
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (bytes, bytearray)):
        parts = list(value)
    else:
        raise RejectRow(f"malformed box (got {type(value).__name__})")
    if len(parts) != 4:
        raise RejectRow(f"malformed box (expected 4 numbers, got {len(parts)})")
    try:
        coords = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise RejectRow("malformed box (not numbers)") from None
    if not all(np.isfinite(c) for c in coords):
        raise RejectRow("malformed box (not finite)")
    return coords


def check_box(coords: Sequence[float], width: int, height: int) -> None:
    x0, y0, x1, y1 = coords
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise RejectRow("box out of range")


def quantise(coords: Sequence[float], width: int, height: int, num_bins: int) -> list[int]:
    """Bin indices (0..num_bins-1) of x0, y0, x1, y1 relative to the original image size."""
    scale = [width, height, width, height]
    return [int(min(num_bins - 1, max(0, round(c / s * (num_bins - 1))))) for c, s in zip(coords, scale)]


def dequantise(bins: Sequence[int], width: int, height: int, num_bins: int) -> list[float]:
    scale = [width, height, width, height]
    return [float(b) / (num_bins - 1) * s for b, s in zip(bins, scale)]


class BoxEncoder:
    modality = "BOX"
    dtype = "int32"
    materialise_attrs: tuple[str, ...] = ()

    def shape(self, image_size: int) -> list[int | None]:
        return [4]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        coords = parse_box(value)
        if ctx.box_image_column is None or ctx.box_image_column not in ctx.image_sizes:
            raise RuntimeError("BOX needs the row's image to be decoded first (internal ordering error)")
        width, height = ctx.image_sizes[ctx.box_image_column]
        check_box(coords, width, height)
        bins = quantise(coords, width, height, ctx.vocab.num_bins)
        ids = np.asarray([ctx.vocab.bin_id(b) for b in bins], dtype=np.int32)
        return Materialised(ids, ref=coords)

    def token_length(self, array: np.ndarray) -> int:
        return 4
