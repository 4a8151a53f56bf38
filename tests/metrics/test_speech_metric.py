"""Text-to-speech metric: log-mel L1 after stretching to the reference's length, and its baseline."""

from __future__ import annotations

import numpy as np
import pytest

from ofasys.metrics.speech import fbank_l1, fbank_l1_scores, mean_fbank_sequence, resample_frames

BINS = 80


def logmel(frames: int, seed: int = 0) -> np.ndarray:
    """A stand-in T x 80 log-mel: values in the range of real raw Kaldi features."""
    return np.random.default_rng(seed).uniform(-5.0, 20.0, size=(frames, BINS)).astype(np.float32)


# ----- resample_frames ---------------------------------------------------------------------------

@pytest.mark.parametrize("length", [2, 5, 37, 100])
def test_resampling_keeps_a_linear_ramp(length):
    ramp = np.linspace(-3.0, 7.0, 20)[:, None] * np.ones((1, BINS))
    out = resample_frames(ramp, length)
    assert out.shape == (length, BINS)
    np.testing.assert_allclose(out, np.linspace(-3.0, 7.0, length)[:, None] * np.ones((1, BINS)), atol=1e-12)


def test_resampling_to_the_same_length_is_the_identity():
    frames = logmel(13)
    np.testing.assert_array_equal(resample_frames(frames, 13), frames.astype(np.float64))


def test_resampling_edge_cases():
    frames = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(resample_frames(frames, 1), [[2.0, 3.0]])  # the middle row
    np.testing.assert_array_equal(resample_frames(frames[:1], 4), np.repeat(frames[:1], 4, axis=0))
    assert resample_frames(frames, 0).shape == (0, 2)
    np.testing.assert_array_equal(resample_frames([0.0, 2.0], 3), [0.0, 1.0, 2.0])  # any trailing shape
    with pytest.raises(ValueError, match="no frames"):
        resample_frames(np.zeros((0, 2)), 3)
    with pytest.raises(ValueError, match="length"):
        resample_frames(frames, -1)


# ----- fbank_l1 ----------------------------------------------------------------------------------

def test_identical_outputs_score_zero():
    refs = [logmel(50, seed=1), logmel(80, seed=2)]
    assert fbank_l1(refs, refs) == 0.0
    assert fbank_l1([r.tolist() for r in refs], refs) == 0.0  # nested lists, e.g. read back from JSON


def test_a_constant_offset_of_one_scores_one():
    refs = [logmel(50, seed=1), logmel(80, seed=2)]
    assert fbank_l1([r + 1.0 for r in refs], refs) == pytest.approx(1.0, abs=1e-6)
    assert fbank_l1([r - 1.0 for r in refs], refs) == pytest.approx(1.0, abs=1e-6)


def test_a_tempo_difference_costs_little_and_a_length_error_costs():
    """The same smooth contour generated 10% slower is nearly free after stretching; a frame-by-frame
    comparison would not be, and neither is the wrong contour."""
    time = np.linspace(0.0, 1.0, 100)[:, None]
    contour = 10.0 * np.sin(2 * np.pi * 2 * time) + np.linspace(0.0, 5.0, BINS)[None]
    slower = 10.0 * np.sin(2 * np.pi * 2 * np.linspace(0.0, 1.0, 110)[:, None]) + np.linspace(0.0, 5.0, BINS)[None]
    assert fbank_l1([slower], [contour]) < 0.01
    assert fbank_l1([slower[:100]], [contour]) > 1.0
    assert fbank_l1([slower[:55]], [contour]) > 1.0  # half of it: the wrong sounds in the wrong places


def test_no_output_scores_as_silence():
    ref = logmel(40, seed=3)
    silence = float(np.mean(ref - ref.min()))
    flat = np.full((10, BINS), ref.min())
    scores = fbank_l1_scores([None, np.zeros((0, BINS)), [], flat], [ref] * 4)
    assert scores == pytest.approx([silence] * 4)
    assert fbank_l1([None, ref], [ref, ref]) == pytest.approx(silence / 2)


def test_scores_are_per_sample_and_each_sample_weighs_the_same():
    short, long = logmel(10, seed=4), logmel(500, seed=5)
    scores = fbank_l1_scores([short + 2.0, long], [short, long])
    assert scores == pytest.approx([2.0, 0.0])
    assert fbank_l1([short + 2.0, long], [short, long]) == pytest.approx(1.0)


@pytest.mark.parametrize("outputs, references, match", [
    ([logmel(5)], [logmel(5), logmel(5)], "predictions"),
    ([], [], "no examples"),
    ([logmel(5)[:, :40]], [logmel(5)], "T x 80"),
    ([np.full((5, BINS), np.nan)], [logmel(5)], "non-finite"),
    ([logmel(5)], [None], "None"),
    ([logmel(5)], [np.zeros((0, BINS))], "T >= 1"),
])
def test_bad_input_is_rejected(outputs, references, match):
    with pytest.raises(ValueError, match=match):
        fbank_l1(outputs, references)


# ----- mean_fbank_sequence -----------------------------------------------------------------------

def test_mean_sequence_has_the_median_length():
    train = [logmel(n, seed=n) for n in (30, 50, 70, 90)]
    mean = mean_fbank_sequence(train)
    assert mean.shape == (50, BINS)  # the lower median of 30, 50, 70, 90
    assert mean_fbank_sequence(train[:3]).shape == (50, BINS)


def test_mean_sequence_is_the_frame_wise_mean_of_the_stretched_references():
    ramp = np.linspace(0.0, 10.0, 11)[:, None] * np.ones((1, BINS))
    train = [ramp, resample_frames(ramp, 21) + 2.0, resample_frames(ramp, 6) - 2.0]
    np.testing.assert_allclose(mean_fbank_sequence(train), ramp, atol=1e-12)  # the median length is 11


def test_mean_sequence_scores_as_a_baseline():
    train = [logmel(n, seed=n) for n in (40, 60, 80)]
    test = [logmel(n, seed=100 + n) for n in (45, 75)]
    mean = mean_fbank_sequence(train)
    baseline = fbank_l1([mean] * len(test), test)
    assert 0.0 < baseline < fbank_l1([None] * len(test), test)


def test_mean_sequence_rejects_no_or_mixed_references():
    with pytest.raises(ValueError, match="no training references"):
        mean_fbank_sequence([])
    with pytest.raises(ValueError, match="different bins"):
        mean_fbank_sequence([logmel(5), logmel(5)[:, :40]])
