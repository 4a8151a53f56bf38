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

from ofasys.modalities.base import NO_ASSETS, Materialised, Modality, OutputStep, RejectRow, RowContext, is_missing
from ofasys.vocab import UnifiedVocab

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


class Box(Modality):
    name = "BOX"
    doc = '"x0,y0,x1,y1" in pixels of its image -> 4 <bin_i> ids; shared token embedding; generated as 4 bins'
    output_field = "box"
    attributes = {"BOX": frozenset({
        "no_loss", "preprocess", "adaptor", "add_bos", "add_eos", "disable_auto_boseos",
    })}
    preprocess = {"default": None, "box": None}
    """OFASys's `box` preprocessor: coordinates quantised against the image into bin tokens."""
    adaptors = {"default": None, "text": None}
    """OFASys embeds BOX bins with its `text` adaptor (the shared token embedding), as here."""
    needs = ("IMAGE",)
    needs_fix = "use one [IMAGE:<column>] slot for the image the boxes refer to"
    vocab_block = "bins"

    def shape(self, image_size: int) -> list[int | None]:
        return [4]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        coords = parse_box(value)
        size = ctx.meta.get(ctx.needed_column("IMAGE"), {})
        if "width" not in size:
            raise RuntimeError("BOX needs the row's image to be decoded first (internal ordering error)")
        width, height = int(size["width"]), int(size["height"])
        check_box(coords, width, height)
        bins = quantise(coords, width, height, ctx.vocab.num_bins)
        ids = np.asarray([ctx.vocab.bin_id(b) for b in bins], dtype=np.int32)
        return Materialised(ids, ref=coords)

    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        return OutputStep("fixed", column, self.name, allowed=vocab.bin_range, length=4)

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        """[x0, y0, x1, y1] in the original image's pixels; None when fewer than 4 bins came out."""
        if len(ids) < 4:
            return None
        if "width" not in context or "height" not in context:
            raise KeyError(f"decoding a BOX needs the original size of its image in meta (got keys {sorted(context)})")
        bins = [vocab.bin_index(t) for t in ids]
        return dequantise(bins, int(context["width"]), int(context["height"]), vocab.num_bins)
