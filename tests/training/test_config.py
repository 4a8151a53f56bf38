"""TrainConfig: defaults are the calibrated demo schedule; validation is loud; dict round trip."""

import dataclasses

import pytest

from ofasys.training import TrainConfig


def test_defaults_match_calibration():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.label_smoothing) == (2e-3, 200, 0.01, 0.1)
    assert cfg.mixture == "weight"


def test_every_field_has_a_docstring():
    import inspect

    import ofasys.training.config as module

    source = inspect.getsource(module.TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        head = source.split(f"\n    {field.name}:", 1)[1]
        assert head.split("\n", 2)[1].strip().startswith('"""'), field.name


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(max_steps=10, adam_betas=[0.9, 0.98])
    assert cfg.adam_betas == (0.9, 0.98)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="TrainConfig.max_step: unknown key; did you mean 'max_steps'"):
        TrainConfig.from_dict({"max_step": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.parametrize("bad", [
    {"max_steps": 0}, {"max_tokens": -1}, {"lr": 0.0}, {"zero_stage": 4}, {"mixture": "uniform"},
    {"temperature": 0.0}, {"min_lr_ratio": 1.5}, {"label_smoothing": 1.0}, {"warmup_steps": -1},
    {"adam_betas": (0.9,)}, {"keep_last": 0}, {"seed": -1},
])
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)
