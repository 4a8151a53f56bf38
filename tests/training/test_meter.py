import math

import pytest

from ofasys.training.meter import TaskMeter


def test_loss_is_per_target_token_and_prefers_unsmoothed_nll():
    meter = TaskMeter(["a", "b"])
    meter.add("a", loss=9.0, stats={"nll_sum": 10.0, "correct": 5}, ntokens=10, samples=2, tokens=30)
    meter.add("a", loss=9.0, stats={"nll_sum": 30.0, "correct": 15}, ntokens=10, samples=2, tokens=30)
    meter.add("b", loss=2.0, stats={}, ntokens=20, samples=4, tokens=40)
    out = meter.reduce(world=1, device=None)
    assert out["train/loss/a"] == pytest.approx(40.0 / 20)  # NLL sums over tokens, not the smoothed loss
    assert out["train/acc/a"] == pytest.approx(20 / 20)
    assert out["train/loss/b"] == pytest.approx(2.0) and "train/acc/b" not in out
    assert out["train/loss"] == pytest.approx((40.0 + 40.0) / 40)  # token-weighted over tasks
    assert out["samples/s"] > 0 and math.isfinite(out["tokens/s"])


def test_reduce_resets_and_skips_tasks_not_seen():
    meter = TaskMeter(["a", "b"])
    meter.add("a", loss=1.0, stats={}, ntokens=4, samples=1, tokens=4)
    meter.reduce(world=1, device=None)
    meter.add("b", loss=3.0, stats={}, ntokens=2, samples=1, tokens=2)
    out = meter.reduce(world=1, device=None)
    assert "train/loss/a" not in out and out["train/loss/b"] == pytest.approx(3.0)
