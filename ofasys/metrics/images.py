"""Image metrics on VQ code grids: code accuracy and pixel error, and their baseline predictors.

A generated image (text-to-image, image infilling) is a grid of VQ codes: a list of code indices
(ints in `[0, codebook_size)`), row-major, `grid * grid` long (64 for an 8x8 grid); a reference is
the same. A generated output may be `None` or shorter than the reference when generation was cut.

Two figures, because each alone misleads: code accuracy is exact but blind to how close a wrong code
looks (two codes may decode to nearly the same patch), and pixel error sees the picture but is
forgiving of a blurry average. Pixel error compares the output's decoded image with the *reference's
decoded image* (not the original picture), so it measures the model's error alone; the VQ's own
reconstruction error is reported by the VQ stage.

`decode` is the VQ tokenizer's decoder: an int array N x grid x grid of codes -> N x H x W x 3 uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Sequence

import numpy as np

from ofasys.metrics.common import check_lengths

Decode = Callable[[np.ndarray], np.ndarray]

MID_GREY = 128
"""The pixel value an incomplete output is scored as: a cut generation has no picture, and a flat
mid-grey image is the answer that assumes nothing about it (its error is the reference's spread
around the middle of the range, never the best nor the worst possible)."""

DECODE_BATCH = 256
"""Code grids decoded per call of `decode`: large enough to keep the decoder busy, small enough that
a batch of decoded images stays a few hundred MB at most."""


def codes(value: Any) -> np.ndarray | None:
    """A code sequence (list, tuple, 1-D array or a grid x grid array, row-major) -> a 1-D int64 array;
    `None` (an output that did not decode) stays `None`. ValueError unless the codes are non-negative
    integers."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)  # e.g. a float column read back from a table
    if array.dtype.kind not in "iu":
        raise ValueError(f"VQ codes must be integers, got {array.dtype}")
    array = array.astype(np.int64).ravel()
    if array.min() < 0:
        raise ValueError(f"VQ codes must be >= 0, got {int(array.min())}")
    return array


def _reference_codes(value: Any, what: str) -> np.ndarray:
    ref = codes(value)
    if ref is None or len(ref) == 0:
        raise ValueError(f"{what}: a reference has no codes")
    return ref


def _grid(length: int, what: str) -> int:
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"{what}: {length} codes is not a square grid")
    return side


def code_accuracies(outputs: Sequence[Any], references: Sequence[Any]) -> list[float]:
    """Each output's share of its reference's positions holding the same code. Positions an output
    lacks (`None`, or cut short) count as wrong, so a cut generation cannot score well by being short;
    codes past the reference's length are ignored (there is nothing there to be right about)."""
    check_lengths(outputs, references, "code_accuracy")
    scores = []
    for output, reference in zip(outputs, references):
        ref = _reference_codes(reference, "code_accuracy")
        out = codes(output)
        if out is None:
            scores.append(0.0)
            continue
        n = min(len(out), len(ref))
        scores.append(float(np.count_nonzero(out[:n] == ref[:n])) / len(ref))
    return scores


def code_accuracy(outputs: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean over samples of `code_accuracies`: each image weighs the same whatever its grid size."""
    return float(np.mean(code_accuracies(outputs, references)))


def most_common_codes(train_references: Sequence[Any], n: int | None = None) -> list[int]:
    """The per-position most common code over the training references, for positions `0..n-1` (`n`
    defaults to the longest reference): the best a predictor ignoring the input can do on code accuracy
    (e.g. sky codes on top, ground below). Ties go to the smallest code, so the answer does not depend
    on the order of the training rows; a position is counted over the references long enough to have it."""
    refs = [_reference_codes(r, "most_common_codes") for r in train_references]
    if not refs:
        raise ValueError("baseline: no training references")
    length = max(len(r) for r in refs) if n is None else n
    padded = np.full((len(refs), length), -1, dtype=np.int64)
    for row, ref in zip(padded, refs):
        row[:min(length, len(ref))] = ref[:length]
    answer = []
    for position in range(length):
        column = padded[:, position]
        column = column[column >= 0]
        if len(column) == 0:
            raise ValueError(f"most_common_codes: no training reference has position {position}")
        answer.append(int(np.argmax(np.bincount(column))))  # argmax: the first, i.e. smallest, of ties
    return answer


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def decode_all(sequences: Sequence[np.ndarray], decode: Decode) -> list[np.ndarray]:
    """Decode code sequences (each a square grid's worth) with one `decode` call per grid size; the
    caller keeps `sequences` to one batch (`DECODE_BATCH`) so the images fit in memory."""
    images: list[np.ndarray | None] = [None] * len(sequences)
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_length.setdefault(len(seq), []).append(i)
    for length, indices in by_length.items():
        side = _grid(length, "decode")
        grids = np.stack([sequences[i] for i in indices]).reshape(len(indices), side, side)
        decoded = np.asarray(decode(grids))
        if decoded.ndim != 4 or decoded.shape[0] != len(indices) or decoded.shape[-1] != 3:
            raise ValueError(f"image_decoder returned shape {decoded.shape} for {len(indices)} grids; "
                             "expected N x H x W x 3")
        for i, image in zip(indices, decoded):
            images[i] = image
    return images  # type: ignore[return-value]


def _is_image(output: Any) -> bool:
    """An H x W x 3 array (or nested lists) rather than codes, which are 1-D or a 2-D grid."""
    return output is not None and np.ndim(output) == 3


def pixel_errors(outputs: Sequence[Any], references: Sequence[Any], decode: Decode,
                 batch_size: int = DECODE_BATCH) -> list[float]:
    """Each output's mean absolute difference from its reference, in 0-255 pixel units, both images
    decoded from codes by `decode` (the model's error alone, not the VQ's reconstruction error).

    An output is a code sequence (decoded; codes past the reference's length are dropped) or an image
    array H x W x 3 (float or uint8, used as it is: how the mean-image baseline is scored by this same
    code). An incomplete output (`None`, or fewer codes than the reference) is scored as a flat
    `MID_GREY` image, so a cut generation is neither skipped nor a perfect score."""
    check_lengths(outputs, references, "pixel_error")
    errors: list[float] = []
    for chunk in _chunks(len(outputs), batch_size):
        refs = [_reference_codes(references[i], "pixel_error") for i in chunk]
        outs: list[Any] = []
        for i, ref in zip(chunk, refs):
            output = outputs[i]
            if _is_image(output):
                outs.append(np.asarray(output))
                continue
            out = codes(output)
            outs.append(None if out is None or len(out) < len(ref) else out[:len(ref)])
        to_decode = refs + [o for o in outs if o is not None and not _is_image(o)]
        decoded = iter(decode_all(to_decode, decode))
        ref_images = [next(decoded) for _ in refs]
        for out, ref_image in zip(outs, ref_images):
            if out is None:
                image = np.full(ref_image.shape, MID_GREY, dtype=np.float32)
            elif _is_image(out):
                image = out
            else:
                image = next(decoded)
            if image.shape != ref_image.shape:
                raise ValueError(f"pixel_error: an output image is {image.shape}, its reference {ref_image.shape}")
            diff = np.abs(image.astype(np.float32) - ref_image.astype(np.float32))
            errors.append(float(diff.mean()))
    return errors


def pixel_error(outputs: Sequence[Any], references: Sequence[Any], decode: Decode,
                batch_size: int = DECODE_BATCH) -> float:
    """Mean over samples of `pixel_errors` (each image weighs the same whatever its size)."""
    return float(np.mean(pixel_errors(outputs, references, decode, batch_size)))


def mean_image(train_references: Sequence[Any], decode: Decode, batch_size: int = DECODE_BATCH) -> np.ndarray:
    """The pixel-wise mean of the decoded training references (float H x W x 3): the image closest on
    average, in squared pixel distance, to the training pictures, i.e. what a predictor ignoring the
    input would draw to minimise pixel error (a blur; the median would minimise absolute error exactly,
    but the mean is the familiar baseline and differs little). Decoded in batches and summed, so the
    training set is never in memory at once."""
    refs = [_reference_codes(r, "mean_image") for r in train_references]
    if not refs:
        raise ValueError("baseline: no training references")
    total: np.ndarray | None = None
    for chunk in _chunks(len(refs), batch_size):
        for image in decode_all([refs[i] for i in chunk], decode):
            if total is None:
                total = np.zeros(image.shape, dtype=np.float64)
            elif image.shape != total.shape:
                raise ValueError(f"mean_image: training images differ in size ({image.shape} vs {total.shape})")
            total += image
    return total / len(refs)  # type: ignore[operator]
