"""Per-modality materialisation: one module per modality, looked up in a plain dict.

`ENCODERS[modality]` turns a raw cell into the array stored in the shard. Modalities listed in
`NOT_YET_SUPPORTED` parse in instructions but can't be materialised yet: materialisation refuses
them up front, naming the slot, rather than skipping them.
"""

from __future__ import annotations

from ofasys.modalities.base import Materialised, RejectRow, RowContext
from ofasys.modalities.box import BoxEncoder
from ofasys.modalities.category import CategoryEncoder
from ofasys.modalities.image import ImageEncoder
from ofasys.modalities.text import TextEncoder

ENCODERS = {
    "TEXT": TextEncoder(),
    "IMAGE": ImageEncoder(),
    "BOX": BoxEncoder(),
    "CATEGORY": CategoryEncoder(),
}

TOKEN_MODALITIES = frozenset({"TEXT", "BOX", "CATEGORY"})
"""Modalities whose stored array is a run of unified token ids (they join token segments)."""

NOT_YET_SUPPORTED = frozenset({"AUDIO", "VIDEO", "STRUCT", "PHONE", "MOTION"})

__all__ = [
    "ENCODERS",
    "NOT_YET_SUPPORTED",
    "TOKEN_MODALITIES",
    "Materialised",
    "RejectRow",
    "RowContext",
]
