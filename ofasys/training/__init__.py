"""Training: the weighted multitask sampler, the LR schedule, the DeepSpeed trainer and the export.

`from ofasys.training import Trainer, TrainConfig` is the usual entry point; the submodules each do
one job (config, sampler, schedule, ds_config, seeding, process_group, checkpoint_integrity,
trainer, export). Importing this package does not import deepspeed: the trainer imports it inside
`fit()`, after setting its environment defaults.

Names are imported from their submodule on first use, so `ofasys.training.config` (read when params
load, by every stage) does not pull in torch.
"""

from __future__ import annotations

from ofasys.lazy_exports import lazy_getattr

_EXPORTS = {
    "CheckpointIntegrityError": "ofasys.training.checkpoint_integrity",
    "TrainConfig": "ofasys.training.config",
    "load_pretrained_config": "ofasys.training.export",
    "load_pretrained_state": "ofasys.training.export",
    "save_pretrained": "ofasys.training.export",
    "SampledBatch": "ofasys.training.sampler",
    "SamplerStateError": "ofasys.training.sampler",
    "WeightedMultitaskSampler": "ofasys.training.sampler",
    "MicroRecord": "ofasys.training.trainer",
    "Trainer": "ofasys.training.trainer",
    "TrainResult": "ofasys.training.trainer",
}
"""Public name -> the module defining it."""

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
