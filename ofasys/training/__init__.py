"""Training: the weighted multitask sampler, the LR schedule, the DeepSpeed trainer and the export.

`from ofasys.training import Trainer, TrainConfig` is the usual entry point; the submodules each do
one job (config, sampler, schedule, ds_config, seeding, process_group, checkpoint_integrity,
trainer, export). Importing this package does not import deepspeed: the trainer imports it inside
`fit()`, after setting its environment defaults.

Names are imported from their submodule on first use, so `ofasys.training.config` (read when params
load, by every stage) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CheckpointIntegrityError": "checkpoint_integrity",
    "TrainConfig": "config",
    "load_pretrained_config": "export",
    "load_pretrained_state": "export",
    "save_pretrained": "export",
    "SampledBatch": "sampler",
    "SamplerStateError": "sampler",
    "WeightedMultitaskSampler": "sampler",
    "MicroRecord": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
}
"""Public name -> the submodule defining it."""

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
