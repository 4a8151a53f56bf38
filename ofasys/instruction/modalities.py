"""Modality names as the instruction language knows them, and which of them are text-like.

"Text-like" means the slot becomes a run of ids in the unified vocabulary (BPE text, bin
tokens, phone tokens, label tokens, VQ codes). Only those take `<BOS>`/`<EOS>` and are
wrapped automatically; an IMAGE of pixels or an AUDIO fbank is embedded by its own adaptor
and has no begin/end token.

An IMAGE with `preprocess=image_vqgan` is materialised as VQ codes, i.e. tokens, so it
behaves as its own kind, `VQ_IMAGE`, for attribute applicability and BOS/EOS.
"""

from __future__ import annotations

MODALITIES: tuple[str, ...] = (
    "TEXT", "IMAGE", "BOX", "AUDIO", "VIDEO", "STRUCT", "MOTION", "PHONE", "CATEGORY",
)

VQ_IMAGE = "IMAGE+image_vqgan"
"""Kind of an IMAGE slot with preprocess=image_vqgan (VQ code tokens, not pixels)."""

TEXT_LIKE: frozenset[str] = frozenset({"TEXT", "BOX", "STRUCT", "PHONE", "CATEGORY", VQ_IMAGE})


def slot_kinds(modality: str, preprocess: str | None) -> frozenset[str]:
    """The kinds a slot counts as: its modality, plus VQ_IMAGE for a VQ-coded image."""
    if modality == "IMAGE" and preprocess == "image_vqgan":
        return frozenset({modality, VQ_IMAGE})
    return frozenset({modality})


def is_text_like(modality: str, preprocess: str | None) -> bool:
    """Whether the slot is a token run that takes BOS/EOS (see module docstring)."""
    return bool(slot_kinds(modality, preprocess) & TEXT_LIKE)


def describe_kinds(kinds: frozenset[str]) -> str:
    """Human list of kinds in MODALITIES order, e.g. 'TEXT, STRUCT, IMAGE (preprocess=image_vqgan)'."""
    names = [m for m in MODALITIES if m in kinds]
    if VQ_IMAGE in kinds and "IMAGE" not in kinds:
        names.append("IMAGE (preprocess=image_vqgan)")
    return ", ".join(names)
