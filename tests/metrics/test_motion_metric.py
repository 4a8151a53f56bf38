"""Text-to-motion metric: descriptors, nearest-neighbour label retrieval on synthetic and real
(pybullet DeepMimic) clips, the mean-pose-sequence baseline, label distances and shape errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ofasys.metrics import motion as mm

F = mm.FEATURES
LABELS = ("walk", "wave", "jump")


def synthetic_clip(label: int, rng: np.random.Generator) -> np.ndarray:
    """A window of label `label`'s motion: its own poses (offsets) and movement (amplitudes, frequency),
    cut at a random phase, length (30-90 frames) and speed, with frame noise."""
    style = np.random.default_rng(100 + label)  # the same style for every clip of a label
    offset, amplitude, shift = style.normal(size=F), style.uniform(0.2, 1.0, size=F), style.uniform(0, 6.3, size=F)
    frequency = 0.5 + label
    t = np.arange(int(rng.integers(30, 91)))[:, None] / 30 * rng.uniform(0.8, 1.25)
    wave = np.sin(2 * np.pi * frequency * t + shift + rng.uniform(0, 2 * np.pi))
    return offset + amplitude * wave + rng.normal(scale=0.05, size=(t.shape[0], F))


def synthetic_set(seed: int, per_label: int = 10) -> tuple[list[np.ndarray], list[str]]:
    """A balanced set: `per_label` clips of each of the three labels, labels interleaved."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for _ in range(per_label):
        for k, name in enumerate(LABELS):
            clips.append(synthetic_clip(k, rng))
            labels.append(name)
    return clips, labels


@pytest.fixture(scope="module")
def test_set():
    return synthetic_set(0)


# ----- descriptor --------------------------------------------------------------------------------

def test_descriptor_is_mean_then_std_and_ignores_phase_and_length():
    clip = np.arange(3 * F, dtype=np.float64).reshape(3, F)
    d = mm.descriptor(clip)
    assert d.shape == (2 * F,) and d.dtype == np.float64
    np.testing.assert_allclose(d[:F], clip[1])
    np.testing.assert_allclose(d[F:], np.full(F, np.std([0.0, F, 2 * F])))
    cycle = synthetic_clip(0, np.random.default_rng(1))
    np.testing.assert_allclose(mm.descriptor(np.concatenate([cycle, cycle])), mm.descriptor(cycle))
    np.testing.assert_allclose(mm.descriptor(np.roll(cycle, 17, axis=0)), mm.descriptor(cycle))
    np.testing.assert_allclose(mm.descriptor(cycle.astype(np.float16)), mm.descriptor(cycle), atol=1e-2)


def test_features_width_is_the_modality_s():
    from ofasys.modalities.motion import FEATURES

    assert mm.FEATURES == FEATURES


# ----- motion_match ------------------------------------------------------------------------------

def test_perfect_outputs_score_one(test_set):
    refs, labels = test_set
    assert mm.motion_match(refs, refs, labels) == 1.0
    assert mm.motion_match_scores(refs, refs, labels) == [1.0] * len(refs)


def test_other_windows_of_the_right_motion_match(test_set):
    """Frame-aligned distances would fail here (other phase, speed and length); descriptors do not."""
    refs, labels = test_set
    outputs, _ = synthetic_set(1)  # fresh windows, same labels in the same order
    assert mm.motion_match(outputs, refs, labels) == 1.0
    wrong = outputs[1:] + outputs[:1]  # every output is a clip of the next label
    assert mm.motion_match(wrong, refs, labels) == 0.0


def test_none_and_unusable_outputs_count_wrong(test_set):
    refs, labels = test_set
    outputs = list(refs)
    outputs[0], outputs[4] = None, np.zeros((0, F))
    outputs[7] = np.full((20, F), np.nan)
    scores = mm.motion_match_scores(outputs, refs, labels)
    assert [i for i, s in enumerate(scores) if s == 0.0] == [0, 4, 7]
    assert mm.motion_match(outputs, refs, labels) == pytest.approx(27 / 30)
    assert mm.motion_match([None] * 30, refs, labels) == 0.0


def test_mean_pose_sequence_baseline_scores_at_most_a_third(test_set):
    train, _ = synthetic_set(2)
    baseline = mm.mean_pose_sequence(train)
    assert baseline.shape == (sorted(len(c) for c in train)[14], F)
    refs, labels = test_set
    score = mm.motion_match([baseline] * len(refs), refs, labels)
    assert score <= 1 / 3 + 1e-12  # one clip for every prompt: right only for the label it lands on
    assert mm.motion_match(refs, refs, labels) - score >= 2 / 3


def test_a_feature_all_references_agree_on_does_not_swamp_distances(test_set):
    """A column constant over the references (a knee's off-axis matrix entries are always 0) has no
    spread to standardise by; an output off in it must not get astronomically far from everything."""
    refs, labels = test_set
    refs = [r.copy() for r in refs]
    for r in refs:
        r[:, 5] = 0.0
    outputs = [r.copy() for r in refs]
    for o in outputs:
        o[:, 5] = 0.3
    assert mm.motion_match(outputs, refs, labels) == 1.0
    distances = mm.label_distances(outputs, refs, labels)
    assert distances["same_label_distance"] < 100


def test_ties_go_to_the_first_reference():
    clip = np.ones((4, F))
    assert mm.motion_match_scores([clip, clip], [clip, clip], ["a", "b"]) == [1.0, 0.0]


def test_deterministic(test_set):
    refs, labels = test_set
    outputs, _ = synthetic_set(3)
    first = mm.label_distances(outputs, refs, labels)
    assert mm.label_distances(outputs, refs, labels) == first
    assert mm.motion_match_scores(outputs, refs, labels) == mm.motion_match_scores(outputs, refs, labels)


# ----- real DeepMimic clips ----------------------------------------------------------------------

def real_features(name: str) -> np.ndarray:
    import pybullet_data

    from ofasys.modalities.motion import features

    path = Path(pybullet_data.getDataPath()) / "data" / "motions" / f"humanoid3d_{name}.txt"
    return features(np.asarray(json.loads(path.read_text())["Frames"], dtype=np.float64))


def windows(feats: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """`count` windows of a looping clip: random start and length (0.5-1.5 cycles), every frame or every
    second one (the clip played at another frame rate)."""
    tiled = np.concatenate([feats] * 4)
    out = []
    for _ in range(count):
        start, length = int(rng.integers(len(feats))), int(len(feats) * rng.uniform(0.5, 1.5))
        out.append(tiled[start : start + length : int(rng.integers(1, 3))])
    return out


def test_real_motions_are_retrieved_from_other_windows():
    names = ("walk", "run", "crawl", "dance_a", "spin")
    rng = np.random.default_rng(0)
    refs, outputs, labels = [], [], []
    for name in names:
        feats = real_features(name)
        refs += windows(feats, rng, 4)
        outputs += windows(feats, rng, 4)
        labels += [name] * 4
    assert mm.motion_match(refs, refs, labels) == 1.0
    assert mm.motion_match(outputs, refs, labels) >= 0.9
    baseline = mm.mean_pose_sequence(refs)
    assert mm.motion_match([baseline] * len(refs), refs, labels) <= 0.2 + 1e-12
    distances = mm.label_distances(outputs, refs, labels)
    assert distances["same_label_distance"] < distances["other_label_distance"]


# ----- label_distances ---------------------------------------------------------------------------

def test_label_distances_same_below_other_and_skip_none(test_set):
    refs, labels = test_set
    outputs, _ = synthetic_set(4)
    distances = mm.label_distances(outputs, refs, labels)
    assert set(distances) == {"same_label_distance", "other_label_distance"}
    assert 0 < distances["same_label_distance"] < distances["other_label_distance"] / 2
    skipped = mm.label_distances([None] + outputs[1:], refs, labels)
    assert skipped != distances and all(np.isfinite(v) for v in skipped.values())
    assert mm.label_distances([np.zeros((0, F))] + outputs[1:], refs, labels) == skipped
    far = [outputs[0] + 1e3] + outputs[1:]  # were it counted, it would move both means a lot
    assert mm.label_distances(far, refs, labels)["same_label_distance"] > 10 * skipped["same_label_distance"]
    assert mm.label_distances([None] * 30, refs, labels) == {"same_label_distance": None,
                                                            "other_label_distance": None}
    one_label = mm.label_distances(refs[:3], refs[:3], ["walk"] * 3)
    assert one_label["other_label_distance"] is None


def test_label_distances_hand_values():
    """Two references, spread 1 in one column: distances are in units of that spread."""
    a, b = np.zeros((2, F)), np.zeros((2, F))
    b[:, 0] = 2.0  # descriptor mean differs by 2, the references' spread in that column is 1
    out = np.zeros((2, F))
    out[:, 0] = 0.5
    distances = mm.label_distances([out, b], [a, b], ["x", "y"])
    assert distances == {"same_label_distance": pytest.approx((0.5 + 0.0) / 2),
                         "other_label_distance": pytest.approx((1.5 + 2.0) / 2)}


# ----- mean_pose_sequence ------------------------------------------------------------------------

def test_mean_pose_sequence_resamples_to_the_median_length():
    ramp = lambda t: np.repeat(np.linspace(0.0, 1.0, t)[:, None], F, axis=1)  # noqa: E731
    flat = np.full((7, F), 3.0)
    out = mm.mean_pose_sequence([ramp(3), flat, ramp(11), ramp(5)])  # lengths 3, 5, 7, 11: lower median 5
    np.testing.assert_allclose(out, (3 * ramp(5) + 3.0) / 4)
    np.testing.assert_allclose(mm.mean_pose_sequence([np.ones((1, F)), np.ones((4, F))]), np.ones((1, F)))
    np.testing.assert_allclose(mm.mean_pose_sequence([ramp(11), flat, ramp(5), ramp(3)]), out)  # order-free


# ----- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("outputs, references, labels, message", [
    ([np.zeros((5, F - 1))], [np.zeros((5, F))], ["a"], r"T x 82 features \(got shape \[5, 81\]\)"),
    ([np.zeros(F)], [np.zeros((5, F))], ["a"], r"got shape \[82\]"),
    ([np.zeros((5, F))], [np.zeros((5, F, 1))], ["a"], r"got shape \[5, 82, 1\]"),
    ([np.array([["x"] * F])], [np.zeros((5, F))], ["a"], "real numbers"),
    ([np.zeros((5, F))], [np.zeros((0, F))], ["a"], "reference 0 has no frames"),
    ([np.zeros((5, F))], [np.full((5, F), np.inf)], ["a"], "non-finite"),
    ([None, None], [np.zeros((5, F))], ["a"], "2 predictions but 1 references"),
    ([], [], [], "no examples"),
    ([None], [np.zeros((5, F))], ["a", "b"], "2 labels but 1 references"),
])
def test_shape_errors(outputs, references, labels, message):
    for fn in (mm.motion_match, mm.motion_match_scores, mm.label_distances):
        with pytest.raises(ValueError, match=message):
            fn(outputs, references, labels)


def test_descriptor_and_baseline_errors():
    with pytest.raises(ValueError, match="at least one frame"):
        mm.descriptor(np.zeros((0, F)))
    with pytest.raises(ValueError, match=r"got shape \[3, 3\]"):
        mm.descriptor(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no training references"):
        mm.mean_pose_sequence([])
    with pytest.raises(ValueError, match=r"got shape \[4, 10\]"):
        mm.mean_pose_sequence([np.zeros((4, 10))])
    with pytest.raises(ValueError, match="non-finite"):
        mm.mean_pose_sequence([np.full((4, F), np.nan)])
