"""The universal encoder-decoder (DESIGN §6): config, image adaptor, Transformer layers, model.

`build_model(config, seed)` is how a model for training is made: its initial weights depend on
(config, seed) only, never on the global RNG state.

Names are imported from their submodule on first use, so `ofasys.model.config` (read when params
load, by every stage) does not pull in torch.
"""

from __future__ import annotations

from ofasys.lazy_exports import lazy_getattr

_EXPORTS = {
    "PRESETS": "ofasys.model.config",
    "ModelConfig": "ofasys.model.config",
    "CachedDecoder": "ofasys.model.universal",
    "UniversalModel": "ofasys.model.universal",
    "build_model": "ofasys.model.universal",
}
"""Public name -> the module defining it."""

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
