"""Text-to-motion metric: nearest-neighbour label retrieval on clip descriptors, and its baseline.

A generated motion and a reference are T x 82 MOTION feature arrays (`ofasys.modalities.motion`:
per joint a 6-D rotation, then the root's up direction, linear and angular velocity and height). A
generated clip and its reference are different windows of a motion (other phase, speed and length),
so frame-aligned distances mean nothing. Each clip is summarised instead by a `descriptor`: the
per-feature mean and standard deviation over its frames (2 x 82 numbers: which poses, how much they
move), independent of phase, length and frame order.

`motion_match` asks whether a generated clip is recognisably the motion its prompt asked for: its
nearest reference clip (Euclidean distance of standardised descriptors) among all the test set's
references must carry the prompt's label, like top-1 R-precision in text-to-motion papers. Each
descriptor dimension is divided by its standard deviation over the references, so no feature
dominates by its units (metres per second against unit-vector entries); a dimension on which all
references agree (spread below `STD_FLOOR`, e.g. a knee's off-axis matrix entries, always 0) cannot
tell references apart and is left out: dividing it by the floor instead would add one huge, equal term
to every distance, leaving the nearest neighbour alone but swamping `label_distances`.

A `None` output (a generation that failed) counts as wrong, and so does one with no frames or with
NaN / infinite values (there is no motion to recognise). Outputs of the wrong shape are a ValueError:
they are a bug in the caller, not a bad generation.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

from ofasys.metrics.common import check_lengths

FEATURES = 82
"""Numbers per MOTION frame (`ofasys.modalities.motion.FEATURES`; not imported, so the metrics do not
load the modality registry)."""
STD_FLOOR = 1e-6
"""Reference spread below which a descriptor dimension is left out of the distance."""


def _frames(value: Any, what: str) -> np.ndarray:
    """A clip as a T x `FEATURES` float64 array; ValueError for another shape or non-numbers."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what}: a motion clip must hold real numbers (got {array.dtype})")
    if array.ndim != 2 or array.shape[1] != FEATURES:
        raise ValueError(f"{what}: a motion clip must be T x {FEATURES} features (got shape {list(array.shape)})")
    return array.astype(np.float64)


def _usable(frames: np.ndarray) -> bool:
    """Whether a clip has motion to describe: at least one frame, all finite."""
    return frames.shape[0] > 0 and bool(np.isfinite(frames).all())


def descriptor(clip: Any) -> np.ndarray:
    """T x 82 clip -> 164 float64: the per-feature mean over its frames, then the per-feature standard
    deviation (population). Phase, length and frame order do not change it, so clips cut from the same
    motion at different places and speeds land close together."""
    frames = _frames(clip, "descriptor")
    if not _usable(frames):
        raise ValueError("descriptor: a motion clip needs at least one frame and finite values")
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


def _reference_descriptors(references: Sequence[Any], what: str) -> np.ndarray:
    """N x 164 descriptors of the references; ValueError for an unusable one (references are data the
    metric trusts, so a broken one is an error, not a wrong answer)."""
    rows = []
    for i, reference in enumerate(references):
        frames = _frames(reference, what)
        if not _usable(frames):
            raise ValueError(f"{what}: reference {i} has no frames or non-finite values")
        rows.append(descriptor(frames))
    return np.stack(rows)


def _output_descriptor(output: Any, what: str) -> np.ndarray | None:
    """An output's descriptor, or None when it has no motion (None, no frames, NaN / infinity)."""
    if output is None:
        return None
    frames = _frames(output, what)
    return descriptor(frames) if _usable(frames) else None


def _weights(reference_descriptors: np.ndarray) -> np.ndarray:
    """Per-dimension 1 / spread over the references, 0 where the spread is below `STD_FLOOR` (see the
    module docstring): distances in units of how much references differ."""
    spread = reference_descriptors.std(axis=0)
    return np.where(spread >= STD_FLOOR, 1.0 / np.maximum(spread, STD_FLOOR), 0.0)


def _distances(output: np.ndarray, references: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Standardised Euclidean distance from one output descriptor to each reference descriptor."""
    return np.linalg.norm((references - output) * weights, axis=1)


def _prepared(outputs: Sequence[Any], references: Sequence[Any], labels: Sequence[Hashable],
              what: str) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """(output descriptors or None, reference descriptors, weights), after checking the three align."""
    check_lengths(outputs, references, what)
    if len(labels) != len(references):
        raise ValueError(f"{what}: {len(labels)} labels but {len(references)} references")
    refs = _reference_descriptors(references, what)
    return [_output_descriptor(o, what) for o in outputs], refs, _weights(refs)


def motion_match_scores(outputs: Sequence[Any], references: Sequence[Any],
                        labels: Sequence[Hashable]) -> list[float]:
    """Per sample 1.0 when the output's nearest reference (among all `references`) has the sample's
    label `labels[i]`, else 0.0; an output without motion scores 0.0. Ties go to the first reference,
    so the answer is deterministic."""
    outs, refs, weights = _prepared(outputs, references, labels, "motion_match")
    scores = []
    for i, out in enumerate(outs):
        if out is None:
            scores.append(0.0)
            continue
        nearest = int(np.argmin(_distances(out, refs, weights)))
        scores.append(1.0 if labels[nearest] == labels[i] else 0.0)
    return scores


def motion_match(outputs: Sequence[Any], references: Sequence[Any], labels: Sequence[Hashable]) -> float:
    """Share (0-1) of outputs whose nearest reference clip carries their prompt's label (top-1 label
    retrieval); see `motion_match_scores`."""
    return float(np.mean(motion_match_scores(outputs, references, labels)))


def label_distances(outputs: Sequence[Any], references: Sequence[Any],
                    labels: Sequence[Hashable]) -> dict[str, float | None]:
    """Mean standardised descriptor distance from each output to the references of its own label
    (`same_label_distance`) and to those of other labels (`other_label_distance`), each averaged per
    output first so every sample weighs the same. Shows how far apart the labels are and where the
    outputs sit, beyond the yes / no of `motion_match`. Outputs without motion are skipped; a figure
    with nothing to average (every output skipped, or a single label) is None."""
    outs, refs, weights = _prepared(outputs, references, labels, "label_distances")
    same: list[float] = []
    other: list[float] = []
    for i, out in enumerate(outs):
        if out is None:
            continue
        distances = _distances(out, refs, weights)
        matches = np.array([label == labels[i] for label in labels])
        same.append(float(distances[matches].mean()))  # references[i] itself always matches
        if not matches.all():
            other.append(float(distances[~matches].mean()))
    return {"same_label_distance": float(np.mean(same)) if same else None,
            "other_label_distance": float(np.mean(other)) if other else None}


def _resampled(frames: np.ndarray, length: int) -> np.ndarray:
    """A clip stretched or squeezed to `length` frames by linear interpolation over its frame index
    (first and last frames kept)."""
    positions = np.linspace(0.0, frames.shape[0] - 1, length)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, frames.shape[0] - 1)
    fraction = (positions - low)[:, None]
    return frames[low] * (1.0 - fraction) + frames[high] * fraction


def mean_pose_sequence(train_references: Sequence[Any]) -> np.ndarray:
    """The trivial predictor's one clip (median length x 82 float64): the training clips, each
    resampled to the median training length (the lower median for an even count, so it is a length
    some clip has), averaged frame index by frame index. It ignores the prompt, so it can only match
    the labels its single clip lands nearest to (about 1 / number of labels on a balanced set)."""
    clips = [_frames(r, "mean_pose_sequence") for r in train_references]
    if not clips:
        raise ValueError("baseline: no training references")
    if not all(_usable(c) for c in clips):
        raise ValueError("mean_pose_sequence: a training reference has no frames or non-finite values")
    lengths = sorted(c.shape[0] for c in clips)
    length = lengths[(len(lengths) - 1) // 2]
    return np.mean([_resampled(c, length) for c in clips], axis=0)


