"""Specialists get their task's share of the generalist's compute, and the table compares honestly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.params import parse_params, to_plain
from pipeline.specialists import (comparison_table, markdown_table, quality_ratio, specialist_params,
                                  specialist_steps)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def plain() -> dict:
    return to_plain(parse_params(yaml.safe_load((ROOT / "params.yaml").read_text())))


def test_a_specialist_gets_its_share_of_the_updates_and_a_schedule_of_the_same_shape(plain):
    spec = specialist_params(plain, "vqa", 0.04)
    train = spec["train"]
    assert train["max_steps"] == 52 == round(plain["train"]["max_steps"] * 0.04)
    assert train["grad_accum"] == plain["train"]["grad_accum"]  # same micro-batches per update
    assert train["max_tokens"] == plain["train"]["max_tokens"] and train["lr"] == plain["train"]["lr"]
    assert train["warmup_steps"] == 4  # 100 of 1300 -> 4 of 52
    assert train["valid_every"] == 10  # five validations, as the generalist's 250 of 1300
    assert list(spec["tasks"]) == ["vqa"] and spec["tasks"]["vqa"]["weight"] == 1.0
    assert spec["tasks"]["vqa"]["instruction"] == plain["tasks"]["vqa"]["instruction"]
    assert spec["seed"] == plain["seed"] and spec["model"] == plain["model"]
    assert spec["evaluate"] == plain["evaluate"]  # same test data, decoding and tolerance
    assert spec["tracking"]["registered_model"] == "ofasys-demo-specialist-vqa"
    assert spec["tracking"]["run_label"] == "specialist vqa"
    assert spec["infer"]["tasks"] == ["vqa"]
    parse_params(spec)  # valid params on their own


def test_steps_never_round_to_zero_and_shares_are_checked():
    assert specialist_steps(10, 0.01) == 1
    with pytest.raises(ValueError, match="share"):
        specialist_steps(10, 0.0)


def test_the_generalists_params_are_left_as_they_were(plain):
    before = yaml.safe_dump(plain)
    specialist_params(plain, "caption", 0.18)
    assert yaml.safe_dump(plain) == before


@pytest.mark.parametrize("g, s, higher, expected", [
    (0.9, 1.0, True, 0.9),
    (0.2, 0.1, False, 0.5),    # a WER twice the specialist's keeps half its quality
    (0.1, 0.2, False, 2.0),    # above 1: the generalist is better
    (0.5, 0.0, True, None),    # no ratio against a zero
])
def test_the_ratio_is_above_one_when_the_generalist_is_better_in_either_direction(g, s, higher, expected):
    assert quality_ratio(g, s, higher) == (pytest.approx(expected) if expected is not None else None)


def _entry(metric: str, value: float, higher: bool = True) -> dict:
    return {"metric": metric, metric: value, f"{metric}_baseline": 0.0, "higher_is_better": higher}


def test_the_table_has_a_row_per_task_and_the_mean_ratio():
    generalist = {"vqa": _entry("accuracy", 0.9), "asr": _entry("wer", 0.4, higher=False)}
    specialists = {"vqa": _entry("accuracy", 0.8), "asr": _entry("wer", 0.2, higher=False)}
    table = comparison_table(generalist, specialists, {"vqa": 52, "asr": 130})
    assert table["tasks"]["vqa"]["ratio"] == pytest.approx(1.125)
    assert table["tasks"]["asr"]["ratio"] == pytest.approx(0.5)
    assert table["mean_ratio"] == pytest.approx((1.125 + 0.5) / 2)
    assert table["tasks_at_95pct"] == 1
    md = markdown_table(table)
    assert "| asr | wer (lower is better) | 0.400 | 0.200 | 0.500 | 130 |" in md
    assert "**0.812**" in md


def test_a_specialist_scored_by_another_metric_is_refused():
    with pytest.raises(ValueError, match="scored by accuracy"):
        comparison_table({"vqa": _entry("accuracy", 0.9)}, {"vqa": _entry("exact_match", 0.9)}, {"vqa": 1})
