"""Linear warmup then cosine decay, as a multiplier of the peak learning rate.

Our own schedule (not DeepSpeed's WarmupCosineLR) so the exact curve is the one documented in
TrainConfig and testable without an engine. It is a pure function of the step, so a resumed run's
lr is determined by the restored step count alone.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ofasys.training.config import TrainConfig


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for the optimizer update with 0-based index `step`.

    Update 0 uses 1/warmup_steps of the peak, update warmup_steps-1 the full peak, then the factor
    follows half a cosine from 1 down to `min_lr_ratio`, which it reaches at `max_steps`.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def make_lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """The factor function for `torch.optim.lr_scheduler.LambdaLR`.

    A closure on purpose: LambdaLR checkpoints the `__dict__` of callable objects and would restore
    a stale schedule over the current config on resume; plain functions are not saved.
    """

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=config.warmup_steps, max_steps=config.max_steps,
                         min_lr_ratio=config.min_lr_ratio)

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over every param group; DeepSpeed steps it once per optimizer update."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(config))
