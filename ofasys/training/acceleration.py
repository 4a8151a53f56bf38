"""How a training step runs on its device: precision, torch.compile and activation checkpointing.

None of these change what is learned (up to rounding); they trade memory, compile time and compute.
They are decided here from `TrainConfig` and the device, in one place, so that the DeepSpeed config
(`ds_config.py`) and the trainer's forward agree:

- precision "bf16" on CUDA is DeepSpeed's bf16 mode (the engine casts the weights; inputs are cast
  by the trainer); on CPU DeepSpeed's bf16 path is untested, so the trainer keeps fp32 weights and
  runs the forward under `torch.autocast("cpu", bfloat16)` (`autocast_dtype`). "auto" is bf16 only
  where it is native and fast: a CUDA device that supports it.
- compile and activation checkpointing are applied to the model before DeepSpeed wraps it, through
  the model's own hooks (`compile_layers`, `set_activation_checkpointing`) when it has them, so the
  state dict keys (checkpoints, exports) stay exactly those of the plain model.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
from torch import nn

from ofasys.training.config import TrainConfig

FP32 = "fp32"
BF16 = "bf16"


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 arithmetic is available on `device`: always on CPU (autocast); on CUDA natively
    only (compute capability 8+: Ampere on). Older GPUs emulate bf16 slowly, which is not worth it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"


def resolve_precision(precision: str, device: torch.device | str, supported: bool | None = None) -> str:
    """"fp32" or "bf16": what `precision` ("auto" | "fp32" | "bf16") means on `device`.

    `supported` is whether the device does bf16 (probed when None; tests of a CUDA config on a CPU
    machine pass it). An explicit "bf16" the device cannot do is an error, not a silent fp32 run."""
    device = torch.device(device)
    if precision == FP32:
        return FP32
    if supported is None:
        supported = bf16_supported(device)
    if precision == "auto":
        return BF16 if device.type == "cuda" and supported else FP32
    if precision == BF16:
        if not supported:
            raise ValueError(f"train.precision: bf16 is not supported on {device}; set precision: fp32 or auto")
        return BF16
    raise ValueError(f"train.precision: {precision!r}; expected auto, fp32 or bf16")


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype the trainer autocasts the forward to (resolved `precision`), or None for no autocast.

    Only CPU bf16 autocasts: on CUDA, bf16 is DeepSpeed's own mode (weights cast by the engine)."""
    return torch.bfloat16 if precision == BF16 and torch.device(device).type == "cpu" else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager[Any]:
    """`torch.autocast` on `device` to `dtype`, or a no-op context when `dtype` is None (fp32 runs are
    untouched: not even an autocast region with enabled=False)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def prepare_model(model: nn.Module, loss_module: nn.Module, config: TrainConfig) -> None:
    """Turn on activation checkpointing and compilation as `config` asks, in place, before DeepSpeed.

    Checkpointing needs the model's `set_activation_checkpointing` (which layers to recompute is the
    model's knowledge). Compile uses the model's `compile_layers` when it has one, else compiles
    `loss_module` (the module whose forward runs the loss) whole. `nn.Module.compile` is in place, so
    no `_orig_mod.` prefix ever reaches a state dict."""
    if config.activation_checkpointing:
        setter = getattr(model, "set_activation_checkpointing", None)
        if setter is None:
            raise ValueError(f"train.activation_checkpointing: {type(model).__name__} has no "
                             "set_activation_checkpointing(); set activation_checkpointing: false")
        setter(True)
    if config.compile:
        options = {"backend": config.compile_backend, "mode": compile_mode(config)}
        layers = getattr(model, "compile_layers", None)
        if layers is not None:
            layers(**options)
        else:
            loss_module.compile(**options)


def compile_mode(config: TrainConfig) -> str | None:
    """torch.compile's `mode` argument: None for "default" (backends other than inductor accept
    no mode at all)."""
    return None if config.compile_mode == "default" else config.compile_mode


def skip_single_rank_allreduce(engine: Any, world_size: int, config: TrainConfig) -> None:
    """Turn off DeepSpeed's gradient all-reduce when there is no other rank to reduce with.

    With one rank, DeepSpeed still flattens every gradient into a bucket (zero-filling the missing
    ones), all-reduces it with itself, divides it by 1 and copies it back: about 7% of a tiny-cpu
    step (bench/throughput.py), for gradients that come back bit-identical. fp32 stage 0 only: ZeRO
    stages reduce through their own optimizer, and DeepSpeed's bf16 optimizer keeps its fp32
    gradients in step with that path, neither of which this switch was checked against."""
    if world_size == 1 and config.zero_stage == 0 and not engine.bfloat16_enabled():
        engine.enable_backward_allreduce = False
