"""`train.precision`, `compile*`, `activation_checkpointing` and ZeRO offload as params: typed,
validated at load (a bad combination exits 2 naming the key and the fix), and mapped into the
DeepSpeed config; the defaults leave the config of a CPU run exactly as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ofasys.training import TrainConfig
from ofasys.training.acceleration import autocast_dtype, resolve_precision
from ofasys.training.ds_config import build_ds_config
from pipeline.params import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[2]
NEW_FIELDS = {"precision": "auto", "compile": False, "compile_backend": "inductor", "compile_mode": "default",
              "activation_checkpointing": False, "offload_optimizer": "none", "offload_params": "none"}


def tiny_params() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())


def test_defaults_keep_the_cpu_run_as_it_was():
    cfg = TrainConfig()
    assert {k: getattr(cfg, k) for k in NEW_FIELDS} == NEW_FIELDS
    assert {k: cfg.to_dict()[k] for k in NEW_FIELDS} == NEW_FIELDS  # MLflow params
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    ds = build_ds_config(cfg, "cpu")
    assert ds["bf16"] == {"enabled": False} and ds["zero_optimization"] == {"stage": 0}
    assert "zero_force_ds_cpu_optimizer" not in ds
    assert resolve_precision(cfg.precision, "cpu") == "fp32" and autocast_dtype("fp32", "cpu") is None


@pytest.mark.parametrize("precision, device, supported, expected", [
    ("auto", "cpu", True, "fp32"), ("fp32", "cpu", True, "fp32"), ("bf16", "cpu", True, "bf16"),
    ("auto", "cuda:0", True, "bf16"), ("auto", "cuda:0", False, "fp32"), ("fp32", "cuda:0", True, "fp32"),
    ("bf16", "cuda:0", True, "bf16"),
])
def test_precision_resolves_per_device(precision, device, supported, expected):
    assert resolve_precision(precision, device, supported) == expected
    ds = build_ds_config(TrainConfig(precision=precision), device, bf16_supported=supported)
    # DeepSpeed's bf16 mode on CUDA only; CPU bf16 is the trainer's autocast instead.
    assert ds["bf16"] == {"enabled": expected == "bf16" and device.startswith("cuda")}
    want_autocast = torch.bfloat16 if expected == "bf16" and device == "cpu" else None
    assert autocast_dtype(expected, device) == want_autocast


def test_explicit_bf16_on_a_device_without_it_is_refused():
    with pytest.raises(ValueError, match=r"^train\.precision: bf16 is not supported on cuda:0; set precision: fp32"):
        build_ds_config(TrainConfig(precision="bf16"), "cuda:0", bf16_supported=False)


@pytest.mark.parametrize("offload, zero", [
    (dict(zero_stage=1, offload_optimizer="cpu"), {"stage": 1, "offload_optimizer": {"device": "cpu", "pin_memory": True}}),
    (dict(zero_stage=3, offload_params="cpu"), {"stage": 3, "offload_param": {"device": "cpu", "pin_memory": True}}),
    (dict(zero_stage=3, offload_optimizer="cpu", offload_params="cpu"),
     {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
      "offload_param": {"device": "cpu", "pin_memory": True}}),
])
def test_offload_maps_into_zero_optimization(offload, zero):
    ds = build_ds_config(TrainConfig(**offload), "cuda:0", bf16_supported=True)
    assert ds["zero_optimization"] == zero
    assert ds["zero_force_ds_cpu_optimizer"] is False  # torch's AdamW steps the host copy
    assert ds["optimizer"]["params"]["torch_adam"] is True
    cpu = build_ds_config(TrainConfig(**offload), "cpu")
    assert all(v["pin_memory"] is False for k, v in cpu["zero_optimization"].items() if k != "stage")


@pytest.mark.parametrize("train, expected", [
    (dict(precison="bf16"), r"^train\.precison: unknown key; did you mean 'precision'\?"),
    (dict(precision="fp16"), r"^train\.precision='fp16'; expected one of \('auto', 'fp32', 'bf16'\)"),
    (dict(compile="yes"), r"^train\.compile: expected true or false"),
    (dict(compile_backend="tvm"), r"^train\.compile_backend='tvm'; expected one of"),
    (dict(compile_backend="aot_eager", compile_mode="max-autotune"),
     r"^train\.compile_mode='max-autotune' is an inductor mode: set compile_backend: inductor"),
    (dict(offload_optimizer="cpu"), r"^train\.offload_optimizer='cpu' needs ZeRO: set zero_stage to 1, 2 or 3"),
    (dict(offload_optimizer="nvme", zero_stage=2), r"^train\.offload_optimizer='nvme'; expected one of \('none', 'cpu'\)"),
    (dict(offload_params="cpu", zero_stage=2), r"^train\.offload_params='cpu' needs zero_stage 3 \(got 2\): set zero_stage: 3"),
    (dict(compile=True, zero_stage=3), r"^train\.compile=True does not work with zero_stage 3"),
])
def test_bad_values_and_combinations_are_refused_at_load(train, expected):
    raw = tiny_params()
    raw["train"].update(train)
    with pytest.raises(ParamsError, match=expected) as info:
        parse_params(raw)
    assert "\n" not in str(info.value)


def test_valid_combinations_load():
    raw = tiny_params()
    raw["train"].update(precision="bf16", compile=True, compile_backend="inductor", compile_mode="max-autotune",
                        activation_checkpointing=True, zero_stage=2, offload_optimizer="cpu")
    assert parse_params(raw).train["offload_optimizer"] == "cpu"
    raw = tiny_params()
    raw["train"].update(zero_stage=3, offload_optimizer="cpu", offload_params="cpu")
    parse_params(raw)


def test_a_bad_combination_stops_a_stage_with_exit_2(tmp_path):
    raw = tiny_params()
    raw["train"].update(zero_stage=1, offload_params="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "stages.ingest", "--params", str(tmp_path / "params.yaml"),
                           "--task", "caption"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: train.offload_params='cpu' needs zero_stage 3 (got 1): set zero_stage: 3, "
                                "or offload_params: none")


def test_a_checkpoint_written_before_these_fields_still_resumes_with_their_defaults():
    from ofasys.training.checkpoints import changed_fields

    current = TrainConfig(max_steps=10).to_dict()
    older = {k: v for k, v in current.items() if k not in NEW_FIELDS}  # a checkpoint predating the fields
    assert changed_fields(older, current) == []
    assert changed_fields(older, TrainConfig(max_steps=10, precision="bf16").to_dict()) == ["precision"]
    assert changed_fields(current, TrainConfig(max_steps=10, zero_stage=1, offload_optimizer="cpu").to_dict()) == \
        ["offload_optimizer", "zero_stage"]
    assert changed_fields(current, TrainConfig(max_steps=10, log_every=3).to_dict()) == []  # may differ on resume
