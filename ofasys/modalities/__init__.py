"""The modality registry: modality name -> the one object that knows everything about it.

Each modality is one file, `ofasys/modalities/<name>.py`, holding one `Modality` subclass (see
`ofasys.modalities.base`); adding a modality is that file plus one line here. Nothing outside this
package compares modality names: the instruction parser, materialisation, collation, the model and
generation all ask the object registered here.

Modalities whose `status` is not SUPPORTED parse in instructions (their attributes are checked), but
materialisation refuses them up front, naming the slot.
"""

from __future__ import annotations

from collections.abc import Mapping

from ofasys.modalities.audio import Audio
from ofasys.modalities.base import FRAME_STATS, IMAGE_CODE_GRID, NO_ASSETS, Materialised, Modality, OutputStep, RejectRow, RowContext
from ofasys.modalities.box import Box
from ofasys.modalities.category import Category
from ofasys.modalities.image import Image
from ofasys.modalities.phone import Phone
from ofasys.modalities.motion import Motion
from ofasys.modalities.struct import Struct
from ofasys.modalities.text import Text
from ofasys.modalities.video import Video

MODALITIES: Mapping[str, Modality] = {
    m.name: m
    for m in (Text(), Image(), Box(), Audio(), Video(), Struct(), Motion(), Phone(), Category())
}
"""Every modality the instruction language knows, in the order messages list them."""


def get(name: str) -> Modality:
    """The registered modality `name`; KeyError naming the known ones."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}") from None


__all__ = ["FRAME_STATS", "IMAGE_CODE_GRID", "MODALITIES", "NO_ASSETS", "Materialised", "Modality", "OutputStep", "RejectRow", "RowContext", "get"]
