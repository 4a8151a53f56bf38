"""MOTION features back to DeepMimic frames (text-to-motion output): the round trip on real-looking
clips, yaw / floor-position invariance, off-manifold (generated) features, and `save_motion`'s .npz
and DeepMimic JSON files read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ofasys.modalities import MODALITIES, RowContext
from ofasys.modalities.motion import (
    FEATURES, FRAME_WIDTH, JOINTS, ROOT_POSITION, ROOT_ROTATION, SAVE_SUFFIXES, features, frames_from_features,
    matrix_from_six_d, matrix_quat, quat_matrix, read_frames, save_motion,
)

DT = 1 / 30
SPHERICAL = [start for _, start, kind in JOINTS if kind == "spherical"]
REVOLUTE = [start for _, start, kind in JOINTS if kind == "revolute"]
UP = slice(6 * len(JOINTS), 6 * len(JOINTS) + 3)


def wxyz(rotation: Rotation) -> np.ndarray:
    return rotation.as_quat()[..., [3, 0, 1, 2]]  # scipy is x, y, z, w


def smooth_rotations(rng: np.random.Generator, t: int, step: float) -> Rotation:
    """`t` rotations from a random start, each a small random turn (about `step` rad) from the last:
    unit quaternions smoothed over time, as joints move in a capture."""
    turns = Rotation.from_rotvec(rng.normal(scale=step, size=(t, 3)))
    out = [Rotation.random(random_state=int(rng.integers(2**31)))]
    for turn in turns[1:]:
        out.append(out[-1] * turn)
    return Rotation.concatenate(out)


def clip(seed: int = 0, t: int = 60, dt: float = DT, height: float = 0.85) -> np.ndarray:
    """A real-looking T x 44 clip: smoothly moving joints (revolute angles within (-pi, pi)), a root
    walking forward at 1.3 m/s at constant height while slowly turning and leaning, 30 fps."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((t, FRAME_WIDTH))
    frames[:-1, 0] = dt
    for start in SPHERICAL:
        q = wxyz(smooth_rotations(rng, t, 0.08))
        q *= rng.choice([-1.0, 1.0], size=(t, 1))  # files hold either sign
        frames[:, start : start + 4] = q * rng.uniform(0.98, 1.02, size=(t, 1))  # rounded, not unit
    for start in REVOLUTE:
        frames[:, start] = np.clip(np.cumsum(rng.normal(scale=0.1, size=t)) + rng.uniform(-1, 1), -3.0, 3.0)
    yaw = rng.uniform(-np.pi, np.pi) + np.cumsum(rng.normal(scale=0.03, size=t))
    lean = np.cumsum(rng.normal(scale=0.01, size=(t, 2)), axis=0) + 0.1
    root = Rotation.from_euler("y", yaw[:, None]) * Rotation.from_euler("xz", lean)
    frames[:, ROOT_ROTATION : ROOT_ROTATION + 4] = wxyz(root)
    forward = Rotation.from_euler("y", yaw[:, None]).apply([0.0, 0.0, 1.3 * dt])
    frames[:, ROOT_POSITION : ROOT_POSITION + 3] = np.cumsum(forward, axis=0) + [rng.uniform(-5, 5), 0.0, 2.0]
    frames[:, ROOT_POSITION + 1] = height
    return frames


def turned(frames: np.ndarray, yaw: float, shift=(3.0, -1.0)) -> np.ndarray:
    """The same motion facing elsewhere (turned by `yaw` about +y) and elsewhere on the floor."""
    out = frames.copy()
    turn = Rotation.from_euler("y", yaw)
    out[:, 1:4] = turn.apply(frames[:, 1:4]) + np.array([shift[0], 0.0, shift[1]])
    out[:, 4:8] = wxyz(turn * Rotation.from_quat(frames[:, [5, 6, 7, 4]]))
    return out


def unit(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# ----- round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_round_trip(seed):
    feats = features(clip(seed))
    rebuilt = frames_from_features(feats, DT)
    assert rebuilt.dtype == np.float64 and rebuilt.shape == (60, FRAME_WIDTH)
    np.testing.assert_allclose(features(rebuilt), feats, atol=1e-6)


def test_joints_come_back_up_to_sign():
    frames = clip(3)
    rebuilt = frames_from_features(features(frames), DT)
    for start in SPHERICAL:
        original, back = unit(frames[:, start : start + 4]), rebuilt[:, start : start + 4]
        np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-12)
        assert (back[:, 0] >= 0).all()
        np.testing.assert_allclose(np.abs(np.sum(original * back, axis=1)), 1.0, atol=1e-9)  # q or -q
    np.testing.assert_allclose(rebuilt[:, REVOLUTE], frames[:, REVOLUTE], atol=1e-9)


def test_durations_start_and_height():
    frames = clip(4, height=0.91)
    rebuilt = frames_from_features(features(frames), 0.05)
    np.testing.assert_array_equal(rebuilt[:-1, 0], 0.05)
    assert rebuilt[-1, 0] == 0.0
    np.testing.assert_array_equal(rebuilt[0, [1, 3]], [0.0, 0.0])  # x = z = 0
    np.testing.assert_allclose(rebuilt[:, 2], 0.91)


def test_root_start_has_the_tilt_and_no_yaw():
    """Frame 0's root is the smallest rotation with the stored up direction: upright clips start at the
    identity; a leaning one starts leaning, turned about no vertical axis of its own."""
    upright = features(clip(5))
    upright[:, UP] = [0.0, 1.0, 0.0]
    upright[:, 78:81] = 0.0  # no turning
    np.testing.assert_allclose(frames_from_features(upright, DT)[:, 4:8], [[1, 0, 0, 0]] * 60, atol=1e-12)
    frames = clip(6)
    rebuilt = frames_from_features(features(frames), DT)
    up = features(frames)[0, UP]
    r0 = quat_matrix(rebuilt[0, 4:8])
    np.testing.assert_allclose(r0 @ up, [0.0, 1.0, 0.0], atol=1e-12)
    axis = Rotation.from_matrix(r0).as_rotvec()
    assert abs(axis[1]) < 1e-12  # a swing about a horizontal axis


def test_yaw_and_floor_position_are_not_recoverable_and_do_not_matter():
    frames = clip(7)
    moved = turned(frames, 2.1)
    np.testing.assert_allclose(features(moved), features(frames), atol=1e-9)
    np.testing.assert_allclose(frames_from_features(features(moved), DT),
                               frames_from_features(features(frames), DT), atol=1e-9)
    # the rebuilt root is the original turned by one constant yaw and shifted on the floor
    rebuilt = frames_from_features(features(frames), DT)
    original_r, rebuilt_r = (quat_matrix(unit(f[:, 4:8])) for f in (frames, rebuilt))
    offsets = rebuilt_r @ np.swapaxes(original_r, 1, 2)
    np.testing.assert_allclose(offsets, np.broadcast_to(offsets[0], offsets.shape), atol=1e-9)
    np.testing.assert_allclose(offsets[0] @ [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], atol=1e-9)  # about y
    moved_by = (frames[:, 1:4] - frames[0, 1:4]) @ offsets[0].T
    np.testing.assert_allclose(rebuilt[:, [1, 3]], moved_by[:, [0, 2]], atol=1e-9)


def test_one_frame_and_low_precision_dtypes():
    frames = clip(8)
    one = frames_from_features(features(frames[:1]), DT)
    assert one.shape == (1, FRAME_WIDTH) and one[0, 0] == 0.0
    np.testing.assert_allclose(features(one), features(frames[:1]), atol=1e-9)
    feats = features(frames)
    for dtype, atol in ((np.float32, 1e-5), (np.float16, 2e-3)):
        low = feats.astype(dtype)
        np.testing.assert_allclose(features(frames_from_features(low, DT)), low.astype(np.float64), atol=atol)


# ----- generated (off-manifold) features ---------------------------------------------------------

def test_off_manifold_features_give_valid_frames_and_project():
    """A model's 82 numbers are not exactly rotations: the rebuilt frames are still valid DeepMimic
    frames, and rebuilding is a projection (rebuilding the rebuilt clip's features changes nothing)."""
    rng = np.random.default_rng(9)
    feats = features(clip(9)) * rng.uniform(0.7, 1.3, size=(60, FEATURES)) + rng.normal(scale=0.1, size=(60, FEATURES))
    rebuilt = frames_from_features(feats, DT)
    checked, _ = read_frames(rebuilt)
    for start in (ROOT_ROTATION, *SPHERICAL):
        np.testing.assert_allclose(np.linalg.norm(checked[:, start : start + 4], axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(frames_from_features(features(rebuilt), DT), rebuilt, atol=1e-9)


def test_gram_schmidt_and_degenerate_six_d():
    six = np.array([[2.0, 0.0, 0.0, 1.0, 3.0, 0.0],  # scaled, not orthogonal
                    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # nothing at all
                    [0.0, 0.0, 1.0, 0.0, 0.0, 2.0]])  # second column parallel to the first
    m = matrix_from_six_d(six)
    np.testing.assert_allclose(m[0], np.eye(3), atol=1e-12)
    for r in m:
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(m[2][:, 0], [0.0, 0.0, 1.0])


def test_matrix_quat_is_robust_near_half_turns():
    rng = np.random.default_rng(10)
    axes = unit(rng.normal(size=(200, 3)))
    angles = np.concatenate([rng.uniform(0, np.pi, 100), np.pi - rng.uniform(0, 1e-6, 50), rng.uniform(0, 1e-6, 50)])
    rotations = Rotation.from_rotvec(axes * angles[:, None])
    q = matrix_quat(rotations.as_matrix())
    expected = wxyz(rotations)
    np.testing.assert_allclose(np.abs(np.sum(q * expected, axis=1)), 1.0, atol=1e-12)
    assert (q[:, 0] >= 0).all()


@pytest.mark.parametrize("feats, seconds, message", [
    (np.zeros((5, 81)), DT, "T x 82"),
    (np.zeros((0, 82)), DT, "T x 82"),
    (np.zeros(82), DT, "T x 82"),
    (np.full((2, 82), np.nan), DT, "NaN"),
    (np.zeros((2, 82)), 0.0, "frame_seconds"),
    (np.zeros((2, 82)), float("nan"), "frame_seconds"),
])
def test_bad_input(feats, seconds, message):
    with pytest.raises(ValueError, match=message):
        frames_from_features(feats, seconds)


# ----- save_motion -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["walk.json", "walk.txt", "WALK.JSON"])
def test_save_deepmimic_json_reads_back(tmp_path, name):
    feats = features(clip(11)).astype(np.float32)
    path = save_motion(tmp_path / "out" / name, feats, DT)
    assert path == tmp_path / "out" / name
    doc = json.loads(path.read_text())
    assert doc["Loop"] == "none" and len(doc["Frames"]) == 60
    frames, loop = read_frames(path)
    assert loop == "none"
    np.testing.assert_array_equal(frames, frames_from_features(feats, DT))  # JSON floats round-trip exactly
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no temporary file left
    ctx = RowContext(vocab=None, image_size=32, base_dir=tmp_path)
    played = MODALITIES["MOTION"].materialise(str(path), {}, ctx).array
    np.testing.assert_allclose(played, feats, atol=2e-3)  # float16 storage


def test_save_npz_reads_back_without_pickle(tmp_path):
    feats = features(clip(12)).astype(np.float16)
    path = save_motion(str(tmp_path / "walk.npz"), feats, 0.04)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["features", "frame_seconds", "frames"]
        assert data["features"].dtype == np.float32 and data["features"].shape == (60, FEATURES)
        np.testing.assert_array_equal(data["features"], feats.astype(np.float32))
        assert data["frames"].dtype == np.float64
        np.testing.assert_array_equal(data["frames"], frames_from_features(feats, 0.04))
        assert float(data["frame_seconds"]) == 0.04
    frames, _ = read_frames(path)  # the modality reads the `frames` array
    np.testing.assert_array_equal(frames, frames_from_features(feats, 0.04))


def test_save_rejects_other_suffixes_and_keeps_old_file(tmp_path):
    feats = features(clip(13))
    with pytest.raises(ValueError, match=r"\.bvh.*" + ", ".join(s.replace(".", r"\.") for s in SAVE_SUFFIXES)):
        save_motion(tmp_path / "walk.bvh", feats, DT)
    path = save_motion(tmp_path / "walk.json", feats, DT)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        save_motion(path, np.full((3, FEATURES), np.nan), DT)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.json"]
