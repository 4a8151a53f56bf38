"""Text-to-speech metric: log-mel L1 between generated and reference frames, and its baseline predictor.

A generated utterance is T' x 80 raw Kaldi log-mel frames (`ofasys.modalities.audio.raw_fbank`'s
features, natural log of mel energies on 16-bit sample values); a reference is T x 80 of the same.
An output may be `None` (generation failed) or have no frames (it stopped at once).

The score is the mean absolute difference of the frames, after stretching the output to the
reference's length by linear interpolation along time: an utterance spoken a little faster or slower
is still compared sound by sound (comparing frame i with frame i would shift every frame after the
first pause), while a badly wrong length still costs, as its sounds land in the wrong places. Lower
is better; 0 is a perfect copy. Each utterance weighs the same whatever its length.

The baseline predictor ignores the text: the frame-wise mean training utterance (`mean_fbank_sequence`),
the same for every test sample, stretched like any output to each reference's length.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ofasys.metrics.common import check_lengths


def resample_frames(frames: Any, length: int) -> np.ndarray:
    """`frames` (N x ... , N >= 1) linearly interpolated along axis 0 to `length` rows, float64.

    The first and last rows stay where they are (row i of the result is at position i (N - 1) /
    (length - 1) of the input), so a linear ramp stays the same ramp and N rows to N is the identity;
    one row is the input's middle. ValueError for no input rows or a negative length."""
    array = np.asarray(frames, dtype=np.float64)
    if array.ndim == 0 or len(array) == 0:
        raise ValueError("resample_frames: no frames to resample")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"resample_frames: length must be a non-negative integer, got {length!r}")
    count = len(array)
    if length == 1:
        positions = np.array([(count - 1) / 2.0])
    else:
        positions = np.linspace(0.0, count - 1, int(length))
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, count - 1)
    weight = (positions - lower).reshape((-1,) + (1,) * (array.ndim - 1))
    return array[lower] * (1.0 - weight) + array[upper] * weight


def _reference_frames(value: Any, what: str) -> np.ndarray:
    """A reference as float64 T x D, T >= 1; ValueError otherwise (a reference without frames or with
    a non-finite value cannot be scored against)."""
    if value is None:
        raise ValueError(f"{what}: a reference is None")
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{what}: a reference must be T x bins with T >= 1, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: a reference holds a non-finite value")
    return array


def _output_frames(value: Any, bins: int, what: str) -> np.ndarray | None:
    """An output as float64 T' x bins, or `None` for no output or no frames. ValueError for another
    number of bins or a non-finite value (a broken generation, not a poor one: it should be seen)."""
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return None
    if array.ndim != 2 or array.shape[1] != bins:
        raise ValueError(f"{what}: an output must be T x {bins} like its reference, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: an output holds a non-finite value")
    return array


def fbank_l1_scores(outputs: Sequence[Any], references: Sequence[Any]) -> list[float]:
    """Each output's mean absolute log-mel difference from its reference, after stretching the output
    to the reference's length (see the module doc). `None` or no frames scores as silence: a flat
    sequence at the reference's own minimum, its quietest bin (a cut generation cannot score well by
    being empty, nor worse than the silence it amounts to)."""
    check_lengths(outputs, references, "fbank_l1")
    scores = []
    for output, reference in zip(outputs, references):
        ref = _reference_frames(reference, "fbank_l1")
        out = _output_frames(output, ref.shape[1], "fbank_l1")
        if out is None:
            scores.append(float(np.mean(ref - ref.min())))
        else:
            scores.append(float(np.mean(np.abs(resample_frames(out, len(ref)) - ref))))
    return scores


def fbank_l1(outputs: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean over samples of `fbank_l1_scores`: each utterance weighs the same whatever its length."""
    return float(np.mean(fbank_l1_scores(outputs, references)))


def _median_length(lengths: Sequence[int]) -> int:
    """The lower median: a length some training utterance has, and no rounding of a .5 to decide."""
    ordered = sorted(lengths)
    return ordered[(len(ordered) - 1) // 2]


def mean_fbank_sequence(train_references: Sequence[Any]) -> np.ndarray:
    """The frame-wise mean of the training log-mels, each first stretched to the median training
    length: L x bins float64, what a predictor that ignores the text outputs for every test sample
    (an average utterance: its loudness contour over time and its average spectrum). Stretching
    aligns the utterances' beginnings, middles and ends, so the mean is not smeared by length alone."""
    refs = [_reference_frames(r, "mean_fbank_sequence") for r in train_references]
    if not refs:
        raise ValueError("baseline: no training references")
    bins = {ref.shape[1] for ref in refs}
    if len(bins) != 1:
        raise ValueError(f"mean_fbank_sequence: training references have different bins {sorted(bins)}")
    length = _median_length([len(ref) for ref in refs])
    return np.mean([resample_frames(ref, length) for ref in refs], axis=0)
