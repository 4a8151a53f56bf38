"""Image metrics on VQ code grids: code accuracy, pixel error and their baselines, alone and through
the registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ofasys.metrics import images
from ofasys.metrics import registry as r

BLOCK = 2
"""Pixels per code side in the fake decoder: a 2x2 grid of codes decodes to a 4x4 image."""


class FakeDecoder:
    """A stand-in for the VQ tokenizer's decode: each code becomes a flat grey block of value 10 * code
    (all three channels). A fake is fine here: the tests are about the metrics' arithmetic on decoded
    images, not about the VQ; it also records the batches it is called with."""

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, grids: np.ndarray) -> np.ndarray:
        assert grids.ndim == 3 and grids.shape[1] == grids.shape[2] and grids.dtype.kind == "i"
        self.calls.append(grids.shape)
        pixels = np.repeat(np.repeat(grids * 10, BLOCK, axis=1), BLOCK, axis=2)
        return np.repeat(pixels[..., None], 3, axis=-1).astype(np.uint8)


def data(refs, train=(), decoder=None, **kw):
    return r.EvalData(references=refs, train_references=train,
                      image_decoder=FakeDecoder() if decoder is None else decoder, **kw)


REF = [0, 1, 2, 3]  # decodes to blocks of 0, 10, 20, 30


# --- code accuracy ---------------------------------------------------------------------------------

def test_perfect_codes_score_one_and_a_partial_match_its_exact_share():
    assert images.code_accuracy([REF, [5, 6, 7, 8]], [REF, [5, 6, 7, 8]]) == 1.0
    assert images.code_accuracies([[0, 1, 9, 9], [9, 1, 2, 3]], [REF, REF]) == [0.5, 0.75]
    assert images.code_accuracy([[0, 1, 9, 9], [9, 1, 2, 3]], [REF, REF]) == pytest.approx(0.625)


def test_missing_codes_count_as_wrong_and_extra_codes_are_ignored():
    assert images.code_accuracies([None, [0, 1, 2], [0, 1, 2, 3, 7]], [REF] * 3) == [0.0, 0.75, 1.0]
    assert images.code_accuracies([[]], [REF]) == [0.0]


def test_codes_may_be_arrays_or_a_row_major_grid():
    assert images.code_accuracies([np.array([[0, 1], [9, 3]])], [np.array(REF)]) == [0.75]
    assert images.code_accuracies([np.array([0.0, 1.0, 2.0, 3.0])], [REF]) == [1.0]  # a float column read back
    with pytest.raises(ValueError, match="integers"):
        images.code_accuracy([[0.5, 1, 2, 3]], [REF])
    with pytest.raises(ValueError, match=">= 0"):
        images.code_accuracy([[-1, 1, 2, 3]], [REF])
    with pytest.raises(ValueError, match="no codes"):
        images.code_accuracy([REF], [[]])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        images.code_accuracy([REF, REF], [REF])


def test_most_common_codes_is_the_per_position_mode_with_ties_to_the_smallest_code():
    train = [[1, 2, 3, 4], [1, 5, 3, 6], [7, 5, 3, 4]]
    assert images.most_common_codes(train) == [1, 5, 3, 4]
    assert images.most_common_codes([[2, 9], [1, 8]]) == images.most_common_codes([[1, 8], [2, 9]]) == [1, 8]
    assert images.most_common_codes(train, n=2) == [1, 5]
    # a position is counted over the references that have it
    assert images.most_common_codes([[4, 4], [4, 4, 6], [5, 5, 7]]) == [4, 4, 6]
    with pytest.raises(ValueError, match="no training references"):
        images.most_common_codes([])


def test_code_accuracy_baseline_predicts_the_mode_for_every_sample():
    train = [[1, 2, 3, 4], [1, 5, 3, 6], [7, 5, 3, 4]]
    test = [[1, 5, 3, 4], [1, 0, 0, 0]]
    d = data(test, train)
    assert r.METRICS["code_accuracy"].baseline(d) == [[1, 5, 3, 4]] * 2
    assert r.baseline("code_accuracy", d) == pytest.approx((1 + 0.25) / 2)


# --- pixel error -----------------------------------------------------------------------------------

def test_perfect_outputs_have_no_pixel_error_and_a_wrong_code_its_block_share():
    decode = FakeDecoder()
    assert images.pixel_error([REF, [3, 3, 3, 3]], [REF, [3, 3, 3, 3]], decode) == 0.0
    # last block 50 instead of 30, on a quarter of the pixels
    assert images.pixel_errors([[0, 1, 2, 5]], [REF], decode) == [5.0]
    # every block 10 too high
    assert images.pixel_errors([[1, 2, 3, 4]], [REF], decode) == [10.0]


def test_incomplete_outputs_are_scored_as_mid_grey():
    grey = (128 + 118 + 108 + 98) / 4  # |128 - block| over the blocks 0, 10, 20, 30
    assert images.pixel_errors([None, [0, 1, 2], []], [REF] * 3, FakeDecoder()) == [grey] * 3
    # codes past the reference's length are dropped, not a reason to fail
    assert images.pixel_errors([[0, 1, 2, 3, 9]], [REF], FakeDecoder()) == [0.0]


def test_an_image_output_is_scored_as_it_is():
    flat = np.full((4, 4, 3), 15.0)
    assert images.pixel_errors([flat, flat.astype(np.uint8)], [REF, REF], FakeDecoder()) == [10.0, 10.0]
    with pytest.raises(ValueError, match=r"output image is \(2, 2, 3\)"):
        images.pixel_error([np.zeros((2, 2, 3))], [REF], FakeDecoder())


def test_pixel_error_decodes_in_batches():
    decode = FakeDecoder()
    refs = [[i, i, i, i] for i in range(5)]
    errors = images.pixel_errors([[0, 0, 0, 0]] * 4 + [None], refs, decode, batch_size=2)
    assert errors == [0.0, 10.0, 20.0, 30.0, 88.0]
    # one decode per chunk of 2 samples: both references and both outputs (the None needs no decode)
    assert decode.calls == [(4, 2, 2), (4, 2, 2), (1, 2, 2)]
    # grids of different sizes go in separate calls
    decode = FakeDecoder()
    assert images.pixel_errors([[1] * 9, [1] * 4], [[1] * 9, [2] * 4], decode) == [0.0, 10.0]
    assert sorted(decode.calls) == [(2, 2, 2), (2, 3, 3)]


def test_mean_image_is_the_mean_of_the_decoded_training_references():
    train = [[0, 0, 0, 0], [2, 2, 2, 2], [1, 4, 1, 4]]
    mean = images.mean_image(train, FakeDecoder())
    assert mean.shape == (4, 4, 3)
    assert mean[0, 0, 0] == pytest.approx(10.0) and mean[0, 2, 0] == pytest.approx(20.0)
    assert np.array_equal(images.mean_image(train, FakeDecoder(), batch_size=1), mean)
    with pytest.raises(ValueError, match="differ in size"):
        images.mean_image([[0] * 4, [0] * 9], FakeDecoder())


def test_mean_image_baseline_beats_a_constant_wrong_image_and_loses_to_perfect_outputs():
    train = [[0, 1, 2, 3], [2, 3, 4, 5], [1, 2, 3, 4]]
    test = [[1, 2, 3, 4], [0, 1, 2, 3], [2, 2, 2, 2]]
    d = data(test, train)
    base = r.baseline("pixel_error", d)
    # the mean image is blocks 10, 20, 30, 40: errors 0, 10 and (10 + 0 + 10 + 20) / 4
    assert base == pytest.approx((0 + 10 + 10) / 3)
    assert r.score("pixel_error", test, d) == 0.0 < base
    assert r.score("pixel_error", [[20] * 4] * 3, d) > base  # 200 everywhere


def test_pixel_error_needs_the_image_decoder():
    with pytest.raises(ValueError, match="pixel_error needs image_decoder; pass EvalData"):
        r.score("pixel_error", [REF], r.EvalData(references=[REF]))
    assert r.needs("pixel_error") == r.needs("code_accuracy") == {"image_decoder"}


# --- through the registry --------------------------------------------------------------------------

def test_report_holds_both_image_metrics_their_baselines_and_directions():
    train = [[0, 1, 2, 3], [0, 1, 2, 3], [2, 3, 4, 5]]
    test = [[0, 1, 2, 3], [4, 5, 6, 7]]
    outs = [[0, 1, 2, 3], [4, 5, 0, 0]]
    rep = r.report("code_accuracy", outs, data(test, train))
    assert rep["metric"] == "code_accuracy" and rep["higher_is_better"] is True and rep["num_samples"] == 2
    assert rep["code_accuracy"] == pytest.approx(0.75)  # 1 and 0.5
    assert rep["code_accuracy_baseline"] == pytest.approx(0.5)  # the mode is [0, 1, 2, 3]: 1 and 0
    assert rep["gain"] == pytest.approx(0.25)
    assert rep["pixel_error"] == pytest.approx((0 + (60 + 70) / 4) / 2)
    # the mean image is blocks 6.67, 16.67, 26.67, 36.67: off by 6.67 and 33.33 everywhere
    assert rep["pixel_error_baseline"] == pytest.approx((20 / 3 + 100 / 3) / 2)
    assert rep["degenerate"] is False
    rep = r.report("pixel_error", outs, data(test, train))
    assert rep["higher_is_better"] is False and rep["code_accuracy"] == pytest.approx(0.75)
    assert rep["gain"] == pytest.approx(rep["pixel_error_baseline"] - rep["pixel_error"]) and rep["gain"] > 0
    assert r.gain("pixel_error", 5.0, 20.0) == 15.0


def test_sample_scores_give_one_float_per_image():
    outs = [[0, 1, 2, 5], None, REF]
    d = data([REF] * 3)
    assert r.sample_scores("code_accuracy", outs, d) == [0.75, 0.0, 1.0]
    assert r.sample_scores("pixel_error", outs, d) == [5.0, 113.0, 0.0]


def test_one_sample_scoring_carries_the_image_decoder(monkeypatch):
    """Without `per_sample`, `sample_scores` scores each output on a one-sample EvalData, which must
    keep the shared fields (the decoder) and cut the per-sample ones."""
    one_by_one = dataclasses.replace(r.METRICS["pixel_error"], per_sample=None)
    monkeypatch.setitem(r.METRICS, "pixel_error", one_by_one)
    assert r.sample_scores("pixel_error", [[0, 1, 2, 5], None], data([REF] * 2)) == [5.0, 113.0]
    d = data(["a b"], ["x"], masked_inputs=["a <mask>"], databases=["db"])
    one = r._one_sample(d, 0)
    assert one.image_decoder is d.image_decoder and one.train_references == ["x"]
    assert one.masked_inputs == ["a <mask>"] and one.databases == ["db"]


def test_output_spread_compares_code_lists_by_value():
    refs = [[i] * 4 for i in range(10)]
    spread = r.output_spread([[3, 3, 3, 3]] * 9 + [None], refs)
    assert spread == {"top_output_share": 0.9, "top_reference_share": 0.1, "degenerate": True}
    assert not r.output_spread(refs, refs)["degenerate"]
    # long code arrays that differ only in the middle are different outputs (an array's repr elides it)
    a, b = np.zeros(2048, dtype=np.int64), np.zeros(2048, dtype=np.int64)
    b[1024] = 1
    assert r.output_spread([a, b], [a, b])["top_output_share"] == 0.5
