"""The promotion rule: like with like, no regression, one improvement, every baseline beaten."""

from __future__ import annotations

import pytest

from pipeline.selection import TaskEvaluation, decide, decode, encode, evaluation_fingerprint


def ev(value, baseline=0.2, metric="accuracy", higher=True, degenerate=False, fp="f"):
    return TaskEvaluation(metric, value, baseline, higher, degenerate, fp)


CHAMPION = {"caption": ev(60.0, 10.0, "bleu4"), "asr": ev(0.3, 0.9, "wer", higher=False), "vqa": ev(0.9)}


def test_the_first_version_is_promoted_only_when_every_task_beats_its_baseline():
    assert decide(CHAMPION, None).promote
    below = {**CHAMPION, "asr": ev(0.95, 0.9, "wer", higher=False)}
    d = decide(below, None)
    assert not d.promote and d.reasons == ("asr: wer 0.95 does not beat its baseline 0.9",)


def test_degenerate_output_blocks_promotion_even_above_the_baseline():
    d = decide({**CHAMPION, "caption": ev(61.0, 10.0, "bleu4", degenerate=True)}, None)
    assert not d.promote and "caption: degenerate output" in d.summary()


def test_a_regression_beyond_the_tolerance_blocks_even_with_a_better_mean():
    # caption +20 BLEU, vqa loses 0.05 accuracy: the mean of gains would rise, but vqa regressed.
    candidate = {**CHAMPION, "caption": ev(80.0, 10.0, "bleu4"), "vqa": ev(0.85)}
    d = decide(candidate, CHAMPION)
    assert not d.promote and d.reasons[0].startswith("regresses: vqa: accuracy 0.85 vs 0.9")


def test_within_tolerance_is_noise_and_one_real_improvement_promotes():
    noise = {**CHAMPION, "vqa": ev(0.895)}  # -0.005 in gain; tolerance 2% of 0.7 = 0.014
    assert not decide(noise, CHAMPION).promote  # nothing improved beyond noise either
    assert decide(noise, CHAMPION).reasons == ("no task improves on the champion beyond the tolerance",)
    better = {**noise, "asr": ev(0.2, 0.9, "wer", higher=False)}  # WER down 0.1: gain up 0.1
    d = decide(better, CHAMPION)
    assert d.promote and d.reasons == ("improves: asr: wer 0.2 vs 0.3 (+0.1 in gain; tolerance 0.012)",)
    assert not decide(better, CHAMPION, tolerance=0.2).promote  # 0.1 < 20% of 0.6


def test_other_tasks_or_other_test_data_are_not_compared():
    fewer = {k: v for k, v in CHAMPION.items() if k != "vqa"}
    d = decide(fewer, CHAMPION, champion_label="champion version 3")
    assert not d.promote and "champion version 3 was evaluated on tasks asr, caption, vqa" in d.summary()
    moved = {**CHAMPION, "vqa": ev(0.99, fp="other")}
    d = decide(moved, CHAMPION)
    assert not d.promote and d.reasons[0].startswith("vqa: the champion was evaluated on other test data")


def test_fingerprints_and_the_tag_round_trip():
    a = evaluation_fingerprint(["s1", "s2"], "bleu4", {"split": "test", "beam_size": 3, "max_samples": 0})
    assert a == evaluation_fingerprint(["s1", "s2"], "bleu4", {"max_samples": 0, "beam_size": 3, "split": "test"})
    assert a != evaluation_fingerprint(["s1", "s2"], "bleu4", {"split": "test", "beam_size": 1, "max_samples": 0})
    assert a != evaluation_fingerprint(["s1", "s3"], "bleu4", {"split": "test", "beam_size": 3, "max_samples": 0})
    assert decode(encode(CHAMPION)) == CHAMPION
    assert len(encode({f"task{i}": ev(0.5, fp="f" * 64) for i in range(20)})) < 5000  # a registry tag's limit


@pytest.mark.parametrize("value,expected", [(0.2, False), (0.21, True)])
def test_equal_to_the_baseline_is_not_beating_it(value, expected):
    assert decide({"vqa": ev(value)}, None).promote is expected
