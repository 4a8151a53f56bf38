"""The DeepSpeed config derived from TrainConfig + device."""

import json

import pytest

from ofasys.training import TrainConfig
from ofasys.training.ds_config import build_ds_config


def test_cpu_config_is_fp32_torch_adamw_without_scheduler():
    cfg = TrainConfig(max_batch_size=32, grad_accum=4, zero_stage=2, grad_clip=0.5, lr=1e-3)
    ds = build_ds_config(cfg, "cpu", world_size=2)
    json.dumps(ds)  # plain JSON
    assert ds["bf16"] == {"enabled": False} and ds["fp16"] == {"enabled": False}
    assert ds["optimizer"] == {"type": "AdamW", "params": {
        "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "torch_adam": True}}
    assert ds["train_batch_size"] == 32 * 4 * 2
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_micro_batch_size_per_gpu"] == 32
    assert ds["zero_optimization"] == {"stage": 2} and ds["gradient_clipping"] == 0.5
    assert "scheduler" not in ds


def test_cuda_config_uses_bf16_where_the_device_has_it():
    assert build_ds_config(TrainConfig(), "cuda:0", bf16_supported=True)["bf16"] == {"enabled": True}
    assert build_ds_config(TrainConfig(), "cuda:0", bf16_supported=False)["bf16"] == {"enabled": False}


def test_bad_device_or_world():
    with pytest.raises(ValueError):
        build_ds_config(TrainConfig(), "mps")
    with pytest.raises(ValueError):
        build_ds_config(TrainConfig(), "cpu", world_size=0)
