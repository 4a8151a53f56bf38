"""Warmup + cosine LR factor, alone and through LambdaLR."""

import math

import pytest
import torch

from ofasys.training import TrainConfig
from ofasys.training.schedule import lr_factor, make_scheduler


def factor(step, warmup=200, total=2000, floor=0.0):
    return lr_factor(step, warmup_steps=warmup, max_steps=total, min_lr_ratio=floor)


def test_linear_warmup_reaches_peak_at_warmup_end():
    assert factor(0) == pytest.approx(1 / 200)
    assert factor(99) == pytest.approx(0.5)
    assert factor(199) == 1.0
    assert factor(200) == 1.0  # cosine starts at its top


def test_cosine_decays_monotonically_to_the_floor():
    values = [factor(s, floor=0.1) for s in range(200, 2001)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.1)
    assert factor(1100, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    assert factor(5000, floor=0.1) == pytest.approx(0.1)  # past the end: stays at the floor


def test_no_warmup_and_negative_step():
    assert factor(0, warmup=0) == 1.0
    with pytest.raises(ValueError):
        factor(-1)


def test_lambda_lr_follows_the_factor_and_is_checkpoint_safe():
    cfg = TrainConfig(max_steps=50, warmup_steps=10, lr=2e-3, min_lr_ratio=0.05)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg)
    seen = []
    for _ in range(50):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [cfg.lr * lr_factor(s, warmup_steps=10, max_steps=50, min_lr_ratio=0.05) for s in range(50)]
    assert seen == pytest.approx(expected)
    # The state holds no schedule parameters, so a resumed run uses its own config's schedule.
    assert sched.state_dict()["lr_lambdas"] == [None]
    assert math.isclose(max(seen), cfg.lr)
