"""The universal encoder-decoder (DESIGN §6): config, image adaptor, Transformer layers, model.

`build_model(config, seed)` is how a model for training is made: its initial weights depend on
(config, seed) only, never on the global RNG state.

Names are imported from their submodule on first use, so `ofasys.model.config` (read when params
load, by every stage) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PRESETS": "config",
    "ModelConfig": "config",
    "CachedDecoder": "universal",
    "UniversalModel": "universal",
    "build_model": "universal",
}
"""Public name -> the submodule defining it."""

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
