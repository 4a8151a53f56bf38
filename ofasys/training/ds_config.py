"""The DeepSpeed config dict, derived from TrainConfig and the device only.

Why each choice (SETUP.md "Known traps"):
- fp32 on CPU (CPU bf16 autocast is slow and DeepSpeed's CPU path is tested in fp32), bf16 on CUDA.
- AdamW with `torch_adam: true`: DeepSpeed's fused / CPU Adam JIT-compile C++ for 75-90 s on first
  use; torch's AdamW needs no build and is what we checkpoint anyway.
- The LR schedule is ours (`schedule.py`), passed to `deepspeed.initialize`, so the config has
  no "scheduler" block.
- `train_micro_batch_size_per_gpu` is only DeepSpeed's bookkeeping: our micro-batches are cut by a
  token budget, so we give it the upper bound `max_batch_size`.
"""

from __future__ import annotations

from typing import Any

import torch

from ofasys.training.config import TrainConfig


def build_ds_config(config: TrainConfig, device: torch.device | str, world_size: int = 1) -> dict[str, Any]:
    """DeepSpeed config for `config` on `device` ("cpu" or "cuda[:i]") with `world_size` ranks."""
    if world_size <= 0:
        raise ValueError(f"world_size must be positive, got {world_size}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; expected cpu or cuda")
    on_cuda = device_type == "cuda"
    return {
        "train_micro_batch_size_per_gpu": config.max_batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "train_batch_size": config.max_batch_size * config.grad_accum * world_size,
        "gradient_clipping": float(config.grad_clip),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": config.lr,
                "betas": list(config.adam_betas),
                "eps": config.adam_eps,
                "weight_decay": config.weight_decay,
                "torch_adam": True,
            },
        },
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": on_cuda},
        "fp16": {"enabled": False},
        # We log ourselves through log_fn; keep DeepSpeed's own per-step prints out of the way.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
