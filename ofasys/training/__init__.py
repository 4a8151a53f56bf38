"""Training: the weighted multitask sampler, the LR schedule, the DeepSpeed trainer and the export.

`from ofasys.training import Trainer, TrainConfig` is the usual entry point; the submodules each do
one job (config, sampler, schedule, ds_config, trainer, export). Importing this package does not
import deepspeed: the trainer imports it inside `fit()`, after setting its environment defaults.
"""

from ofasys.training.config import TrainConfig
from ofasys.training.export import load_pretrained_config, load_pretrained_state, save_pretrained
from ofasys.training.sampler import SampledBatch, SamplerStateError, WeightedMultitaskSampler
from ofasys.training.trainer import MicroRecord, Trainer, TrainResult

__all__ = [
    "MicroRecord",
    "SampledBatch",
    "SamplerStateError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WeightedMultitaskSampler",
    "load_pretrained_config",
    "load_pretrained_state",
    "save_pretrained",
]
