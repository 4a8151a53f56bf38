"""The universal encoder-decoder (DESIGN §6): config, Transformer layers, model, checkpoint upgrades.

The adaptors that embed non-token modalities live with their modality (`ofasys/modalities/<name>.py`,
`Modality.build_adaptor`); the model builds one per `ModelConfig.adaptors` entry, keyed by name.
`build_model(config, seed)` is how a model for training is made: its initial weights depend on
(config, seed) only, never on the global RNG state. `upgrade_state_dict` + `load_model_state` load a
checkpoint written before a modality (or before per-modality adaptors) existed.

Names are imported from their submodule on first use, so `ofasys.model.config` (read when params
load, by every stage) does not pull in torch.
"""

from __future__ import annotations

from ofasys.lazy_exports import lazy_getattr

_EXPORTS = {
    "PRESETS": "ofasys.model.config",
    "ModelConfig": "ofasys.model.config",
    "CachedDecoder": "ofasys.model.cached_decoder",
    "UniversalModel": "ofasys.model.universal",
    "build_model": "ofasys.model.universal",
    "load_model_state": "ofasys.model.checkpoint_compat",
    "upgrade_state_dict": "ofasys.model.checkpoint_compat",
}
"""Public name -> the module defining it."""

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
