"""The DeepSpeed config dict, derived from TrainConfig and the device only.

Why each choice (SETUP.md "Known traps"):
- `train.precision` (`acceleration.resolve_precision`): DeepSpeed's bf16 mode only for bf16 on CUDA.
  On CPU the engine always stays fp32 (DeepSpeed's CPU path is tested in fp32); CPU bf16 is the
  trainer's autocast around the forward instead.
- AdamW with `torch_adam: true`: DeepSpeed's fused / CPU Adam JIT-compile C++ for 75-90 s on first
  use; torch's AdamW needs no build and is what we checkpoint anyway. That holds with ZeRO-Offload
  too (`offload_optimizer: cpu` then steps torch's AdamW on the host), which DeepSpeed allows once
  `zero_force_ds_cpu_optimizer` is false.
- The LR schedule is ours (`schedule.py`), passed to `deepspeed.initialize`, so the config has
  no "scheduler" block.
- `train_micro_batch_size_per_gpu` is only DeepSpeed's bookkeeping: our micro-batches are cut by a
  token budget, so we give it the upper bound `max_batch_size`.
"""

from __future__ import annotations

from typing import Any

import torch

from ofasys.training.acceleration import BF16, resolve_precision
from ofasys.training.config import TrainConfig


def build_ds_config(config: TrainConfig, device: torch.device | str, world_size: int = 1, *,
                    bf16_supported: bool | None = None) -> dict[str, Any]:
    """DeepSpeed config for `config` on `device` ("cpu" or "cuda[:i]") with `world_size` ranks.

    `bf16_supported` overrides the device probe (None = ask the device), for configs built for a
    device this process does not have."""
    if world_size <= 0:
        raise ValueError(f"world_size must be positive, got {world_size}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; expected cpu or cuda")
    on_cuda = device_type == "cuda"
    # Resolved on every device, so an impossible precision fails here whatever the device.
    bf16 = resolve_precision(config.precision, device, bf16_supported) == BF16 and on_cuda
    ds = {
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
        "zero_optimization": zero_optimization(config, pin_memory=on_cuda),
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        # We log ourselves through log_fn; keep DeepSpeed's own per-step prints out of the way.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if config.offload_optimizer != "none" or config.offload_params != "none":
        ds["zero_force_ds_cpu_optimizer"] = False  # torch's AdamW steps the offloaded state (see above)
    return ds


def zero_optimization(config: TrainConfig, pin_memory: bool) -> dict[str, Any]:
    """The `zero_optimization` block: the stage, and where optimizer state / parameters live.

    Offload only names a device when asked, so a plain run's block stays `{"stage": N}`. Pinned host
    memory makes the host<->GPU copies asynchronous; on a CPU run there is nothing to pin for."""
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": config.offload_optimizer, "pin_memory": pin_memory}
    if config.offload_params != "none":
        zero["offload_param"] = {"device": config.offload_params, "pin_memory": pin_memory}
    return zero
