"""Loading weights written by an older model layout, or before a modality existed (contracts M5).

Two kinds of older checkpoint load into the current model:

- The layout before adaptors were keyed by modality: one `segment_type.weight` (2 x d_model, row 0
  for token runs, row 1 for images) and the image adaptor under `image_adaptor.*`.
  `upgrade_state_dict` renames them (`segment_embeddings.tokens.weight`,
  `segment_embeddings.IMAGE.weight`, `adaptors.IMAGE.*`); the values are the same numbers, so the
  upgraded model computes exactly what the old one did. The upgrade is explicit, here only: a loader
  that silently accepted either layout would also accept a half-renamed one.
- A checkpoint of a model without a modality the current config has (an AUDIO adaptor added to an
  image-and-text model, for fine-tuning): that modality's adaptor and segment embedding have no
  weights to load and keep their fresh initial weights, which are seeded per modality, so they are
  the same whatever else the model has. `load_model_state` allows exactly those keys to be missing,
  and says which they were.

Any other difference (a missing core weight, an unexpected key, a shape that does not match) is an
error naming the key: it means the config does not describe the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn as nn

from ofasys.data.batch import TOKENS
from ofasys.modalities.image import Image

from .config import ModelConfig

LOG = logging.getLogger(__name__)

ADAPTORS_PREFIX = "adaptors."
SEGMENTS_PREFIX = "segment_embeddings."
LEGACY_SEGMENT_KEY = "segment_type.weight"
LEGACY_SEGMENT_ROWS = (TOKENS, Image.name)
"""Rows of the old segment-type table -> the segment kind whose embedding each row becomes."""
LEGACY_ADAPTOR_PREFIXES = {"image_adaptor.": Image.name}
"""Old adaptor key prefix -> the modality whose adaptor it was."""


def _is_legacy(key: str) -> bool:
    return key == LEGACY_SEGMENT_KEY or key.startswith(tuple(LEGACY_ADAPTOR_PREFIXES))


def _modality_of(key: str) -> str | None:
    """The segment kind or modality a key of the current layout belongs to (None for the core)."""
    if key.startswith((ADAPTORS_PREFIX, SEGMENTS_PREFIX)):
        return key.split(".", 2)[1]
    return None


def upgrade_state_dict(state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """`state` in the current key layout: the layout before per-modality adaptors is renamed (see
    the module docstring), a current one is returned as it is. `config` is the model's config (the
    old segment table must be 2 x its d_model)."""
    legacy = sorted(k for k in state if _is_legacy(k))
    if not legacy:
        return dict(state)
    current = sorted(k for k in state if _modality_of(k) is not None)
    if current:
        raise ValueError(f"the checkpoint mixes the layout before per-modality adaptors ({legacy[0]!r}) with the "
                         f"current one ({current[0]!r}); load a checkpoint written by one version of the model")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == LEGACY_SEGMENT_KEY:
            want = (len(LEGACY_SEGMENT_ROWS), config.d_model)
            if tuple(value.shape) != want:
                raise ValueError(f"{key!r} has shape {list(value.shape)}, the layout before per-modality adaptors "
                                 f"has {list(want)} (rows {', '.join(LEGACY_SEGMENT_ROWS)} x d_model); the config "
                                 "does not match the weights")
            for row, kind in enumerate(LEGACY_SEGMENT_ROWS):
                out[f"{SEGMENTS_PREFIX}{kind}.weight"] = value[row : row + 1].clone()
            continue
        for prefix, modality in LEGACY_ADAPTOR_PREFIXES.items():
            if key.startswith(prefix):
                out[f"{ADAPTORS_PREFIX}{modality}.{key[len(prefix):]}"] = value
                break
        else:
            out[key] = value
    return out


def fresh_modalities(keys: list[str]) -> list[str]:
    """The modalities of keys `load_model_state` reported as fresh, sorted."""
    return sorted({m for m in map(_modality_of, keys) if m is not None})


def _listed(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load `state` (current layout: run `upgrade_state_dict` first) into `model`; returns the keys
    left at their fresh initial weights, sorted (those of modalities `state` has no key of).

    Strict otherwise: an unexpected key, any other missing key, or a shape that differs is a
    ValueError naming the key."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        hint = ("; it is in the layout before per-modality adaptors: pass it through "
                "ofasys.model.upgrade_state_dict first") if any(_is_legacy(k) for k in unexpected) else (
                "; the config does not describe these weights")
        raise ValueError(f"the checkpoint has weights the model does not: {_listed(unexpected)}{hint}")
    present = {_modality_of(k) for k in state} - {None}
    missing = sorted(set(expected) - set(state))
    fresh = [k for k in missing if _modality_of(k) not in (None, TOKENS) and _modality_of(k) not in present]
    lacking = [k for k in missing if k not in fresh]
    if lacking:
        raise ValueError(f"the checkpoint lacks weights the model has: {_listed(lacking)}; the config does not "
                         "describe these weights (only a modality the checkpoint has no weight of may be added)")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"weight {key!r} has shape {list(value.shape)} in the checkpoint, "
                             f"{list(expected[key].shape)} in the model; the config does not match the weights")
    model.load_state_dict(state, strict=False)
    if fresh:
        LOG.info("modalities new to this checkpoint keep their initial weights: %s (%d tensors)",
                 ", ".join(fresh_modalities(fresh)), len(fresh))
    return fresh
