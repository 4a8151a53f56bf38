"""MOTION: real DeepMimic clips (pybullet_data) in every raw form -> yaw-free 6-D features, rejects,
sample_rate / min_length / max_length, collation and the frame adaptor."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ofasys.modalities import MODALITIES, RejectRow, RowContext
from ofasys.modalities.motion import (
    FEATURE_NAMES, FEATURES, FRAME_WIDTH, JOINTS, MotionAdaptorConfig, features, quat_matrix, read_frames,
)

MOTION = MODALITIES["MOTION"]
JOINT_COLUMNS = 6 * len(JOINTS)
UP, VEL, ANGVEL, HEIGHT = (slice(JOINT_COLUMNS + i, JOINT_COLUMNS + i + n) for i, n in ((0, 3), (3, 3), (6, 3), (9, 1)))


def clip_path(name: str) -> Path:
    import pybullet_data

    return Path(pybullet_data.getDataPath()) / "data" / "motions" / f"humanoid3d_{name}.txt"


@pytest.fixture(scope="module")
def walk() -> np.ndarray:
    """The walk cycle's 39 raw frames (30 fps) as DeepMimic stores them."""
    return np.asarray(json.loads(clip_path("walk").read_text())["Frames"], dtype=np.float64)


@pytest.fixture
def mctx(tmp_path) -> RowContext:
    return RowContext(vocab=None, image_size=32, base_dir=tmp_path)  # MOTION reads no vocabulary


def doc(frames: np.ndarray, loop: str = "wrap") -> dict:
    return {"Loop": loop, "Frames": np.asarray(frames).tolist()}


def npy(frames: np.ndarray, dtype: str | None = "<f8") -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(frames, dtype=dtype))
    return buf.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def rest_frames(t: int, dt: float = 1 / 30) -> np.ndarray:
    """`t` frames of the humanoid standing still at the origin, 0.9 m high, every rotation identity."""
    frames = np.zeros((t, FRAME_WIDTH))
    frames[:, 0] = dt
    frames[-1, 0] = 0.0
    frames[:, 2] = 0.9
    for _, start, kind in JOINTS:
        if kind == "spherical":
            frames[:, start] = 1.0
    frames[:, 4] = 1.0
    return frames


def turned(frames: np.ndarray, yaw: float, shift=(3.0, -1.0)) -> np.ndarray:
    """The same motion performed facing elsewhere (turned by `yaw` about +y) and elsewhere on the floor."""
    out = frames.copy()
    turn = Rotation.from_euler("y", yaw)
    out[:, 1:4] = turn.apply(frames[:, 1:4]) + np.array([shift[0], 0.0, shift[1]])
    root = turn * Rotation.from_quat(frames[:, [5, 6, 7, 4]])  # scipy is x, y, z, w
    xyzw = root.as_quat()
    out[:, 4:8] = xyzw[:, [3, 0, 1, 2]]
    return out


# ----- reading -------------------------------------------------------------------------------------

def test_every_raw_form_gives_the_same_features(walk, mctx, tmp_path):
    """Path (absolute, relative, Path), bytes, JSON text, parsed dict, array, .npy and .npz (bytes and
    files): one clip, identical stored arrays."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "walk.txt").write_bytes(clip_path("walk").read_bytes())
    (tmp_path / "clips" / "walk.npy").write_bytes(npy(walk))
    (tmp_path / "clips" / "walk.npz").write_bytes(npz(frames=walk, other=np.zeros(3)))
    reference = MOTION.materialise(str(clip_path("walk")), {}, mctx)
    assert reference.array.dtype == np.float16 and reference.array.shape == (39, FEATURES) == (39, 82)
    seconds = round(float(walk[:-1, 0].sum()), 6)
    assert reference.meta == {"frames": 39, "seconds": seconds, "frame_seconds": round(seconds / 38, 6)}
    values = [clip_path("walk"), "clips/walk.txt", Path("clips/walk.txt"), clip_path("walk").read_bytes(),
              clip_path("walk").read_text(), json.loads(clip_path("walk").read_text()), walk, walk.astype(np.float32),
              npy(walk), "clips/walk.npy", "clips/walk.npz", npz(frames=walk), npz(only=walk)]
    for value in values:
        out = MOTION.materialise(value, {}, mctx)
        if isinstance(value, np.ndarray) and value.dtype == np.float32:  # float32 rounding, then float16
            np.testing.assert_allclose(out.array.astype(np.float32), reference.array.astype(np.float32), atol=2e-2)
        else:
            assert out.array.tobytes() == reference.array.tobytes(), type(value)
            assert out.meta == reference.meta


def test_read_frames_returns_the_loop_flag_and_checked_frames(walk):
    frames, loop = read_frames(clip_path("walk").read_bytes())
    assert loop == "wrap" and frames.shape == (39, FRAME_WIDTH)
    np.testing.assert_array_equal(frames, walk)
    assert read_frames(clip_path("kick").read_bytes())[1] == "none"
    assert read_frames(npy(walk))[1] is None


# ----- what the features mean ----------------------------------------------------------------------

def test_joint_columns_are_the_first_two_columns_of_each_rotation(walk):
    """Checked against scipy's rotation matrices (an independent implementation); revolute joints
    (knees, elbows) are rotations about z by their angle."""
    out = features(walk)
    assert out.shape == (39, FEATURES) and len(FEATURE_NAMES) == FEATURES
    for j, (name, start, kind) in enumerate(JOINTS):
        cols = out[:, 6 * j : 6 * j + 6]
        assert FEATURE_NAMES[6 * j] == f"{name}.r00" and FEATURE_NAMES[6 * j + 5] == f"{name}.r21"
        if kind == "spherical":
            q = walk[:, start : start + 4]
            matrix = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy normalises too
        else:
            matrix = Rotation.from_rotvec(walk[:, start, None] * np.array([0.0, 0.0, 1.0])).as_matrix()
            angle = walk[:, start]
            np.testing.assert_allclose(cols, np.stack([np.cos(angle), np.sin(angle), 0 * angle,
                                                       -np.sin(angle), np.cos(angle), 0 * angle], 1), atol=1e-12)
        np.testing.assert_allclose(cols, np.concatenate([matrix[:, :, 0], matrix[:, :, 1]], 1), atol=1e-9)
        a, b = cols[:, :3], cols[:, 3:]
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-9)
        np.testing.assert_allclose(np.sum(a * b, 1), 0, atol=1e-9)
    # the knees really bend during a walk (the revolute columns are not constant)
    knee = [j for j, (n, _, _) in enumerate(JOINTS) if n == "right_knee"][0]
    assert np.ptp(out[:, 6 * knee]) > 0.2


def test_quat_matrix_agrees_with_scipy():
    q = Rotation.random(50, random_state=0).as_quat()  # x, y, z, w
    np.testing.assert_allclose(quat_matrix(q[:, [3, 0, 1, 2]]), Rotation.from_quat(q).as_matrix(), atol=1e-12)


def test_root_features_are_tilt_velocity_spin_and_height_in_physical_units():
    """A synthetic clip with known answers: facing 90 degrees left of +x (yaw about +y), walking its
    own forward at 1.5 m/s, turning at 2 rad/s about the vertical, pelvis 0.8 m high; at 30 and
    60 fps the features are the same (velocities use the frames' durations)."""
    for fps in (30, 60):
        t = 2 * fps
        frames = rest_frames(t, 1 / fps)
        times = np.arange(t) / fps
        yaw = np.pi / 2 + 2.0 * times
        heading = np.stack([np.cos(yaw), np.zeros(t), -np.sin(yaw)], 1)  # body +x in the world
        step = heading[:-1] * 1.5 / fps
        frames[1:, 1:4] = np.cumsum(step, 0)
        frames[:, 2] = 0.8
        frames[:, 4:8] = np.stack([np.cos(yaw / 2), 0 * yaw, np.sin(yaw / 2), 0 * yaw], 1)
        out = features(frames)
        np.testing.assert_allclose(out[:, UP], np.tile([0.0, 1.0, 0.0], (t, 1)), atol=1e-12)
        np.testing.assert_allclose(out[:, HEIGHT], 0.8)
        np.testing.assert_allclose(out[:, ANGVEL], np.tile([0.0, 2.0, 0.0], (t, 1)), atol=1e-9)
        # moving along the previous frame's heading, seen from the current one: 1.5 m/s, turned back
        # by the 2 / fps rad turned since
        back = 2.0 / fps
        want = 1.5 * np.array([np.cos(back), 0.0, np.sin(back)])
        np.testing.assert_allclose(out[1:, VEL], np.tile(want, (t - 1, 1)), atol=1e-9)
        np.testing.assert_allclose(out[0, VEL], out[1, VEL])
    still = features(rest_frames(1))
    assert still.shape == (1, FEATURES) and not still[0, VEL].any() and not still[0, ANGVEL].any()


def test_lying_and_upside_down_show_in_the_tilt():
    frames = rest_frames(2)
    frames[:, 4:8] = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]  # 90 degrees about z: lying on its side
    np.testing.assert_allclose(features(frames)[0, UP], [1.0, 0.0, 0.0], atol=1e-12)
    frames[:, 4:8] = [0, 1, 0, 0]  # 180 degrees about x: upside down
    np.testing.assert_allclose(features(frames)[0, UP], [0.0, -1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("name", ["walk", "backflip", "roll", "spin"])
def test_features_ignore_where_the_performer_stands_and_faces(name):
    raw = np.asarray(json.loads(clip_path(name).read_text())["Frames"], dtype=np.float64)
    base = features(raw)
    for yaw in (0.7, 2.5, -2.0):
        moved = turned(raw, yaw)
        assert not np.allclose(moved[:, 1:8], raw[:, 1:8])
        np.testing.assert_allclose(features(moved), base, atol=1e-9)


def test_quaternions_are_normalised_and_their_sign_does_not_matter(walk):
    scaled = walk.copy()
    for start in (4, *(s for _, s, kind in JOINTS if kind == "spherical")):
        scaled[:, start : start + 4] *= -2.5
    np.testing.assert_allclose(features(scaled), features(walk), atol=1e-9)


def test_actions_differ_where_they_should():
    """Height separates crawling from walking, speed running from walking, spin about the vertical
    the spin from the walk: the signal the classification demo relies on."""
    f = {n: features(read_frames(clip_path(n).read_bytes())[0]) for n in ("walk", "run", "crawl", "spin")}
    assert f["crawl"][:, HEIGHT].mean() < 0.5 < f["walk"][:, HEIGHT].mean()
    speed = {n: np.linalg.norm(v[:, VEL], axis=1).mean() for n, v in f.items()}
    assert speed["run"] > 2.5 * speed["walk"] > 2.0
    assert np.abs(f["spin"][:, ANGVEL][:, 1]).mean() > 3 * np.abs(f["walk"][:, ANGVEL][:, 1]).mean()


# ----- slot attributes -----------------------------------------------------------------------------

def test_sample_rate_min_and_max_length(walk, mctx):
    full = MOTION.materialise(walk, {}, mctx).array
    every3 = MOTION.materialise(walk, {"sample_rate": 3}, mctx).array
    np.testing.assert_array_equal(every3, full[::3])  # velocities stay those of the full-rate clip
    assert every3.shape[0] == 13
    assert MOTION.materialise(walk, {"sample_rate": 3, "min_length": 13}, mctx).array.shape[0] == 13
    with pytest.raises(RejectRow) as e:
        MOTION.materialise(walk, {"sample_rate": 3, "min_length": 14}, mctx)
    assert e.value.reason == "motion has 13 frames after sample_rate=3, fewer than min_length=14"
    cut = MOTION.materialise(walk, {"sample_rate": 2, "max_length": 7}, mctx)
    np.testing.assert_array_equal(cut.array, full[::2][:7])
    assert cut.meta["frames"] == 39  # the raw clip's
    assert MOTION.materialise(walk, {"max_length": 100}, mctx).array.shape[0] == 39


def test_declarations():
    assert MOTION.status is None and not MOTION.token_run and MOTION.dtype == "float16"
    assert MOTION.preprocess == {"default": None, "motion_6d": None}
    assert MOTION.adaptors == {"default": None, "motion_6d": None}
    assert MOTION.attributes["MOTION"] >= {"sample_rate", "max_length", "min_length"}
    assert set(MOTION.materialise_attrs) == {"sample_rate", "max_length", "min_length"}
    assert MOTION.shape(64) == [None, FEATURES]


# ----- rejects -------------------------------------------------------------------------------------

def _frames_with(change) -> np.ndarray:
    frames = rest_frames(5)
    change(frames)
    return frames


def _set(index, value):
    def change(frames):
        frames[index] = value
    return change


REJECTS = [
    (None, "missing motion"),
    (b"", "missing motion"),
    (b"  \n", "missing motion"),
    ("no/such/clip.txt", "motion file not found (no/such/clip.txt)"),
    ("x" * 300, "motion file not found (" + "x" * 200 + "...)"),
    (12, "unsupported motion value (int)"),
    (b"\xff\xfe\x00garbage", "motion bytes are neither UTF-8 JSON nor .npy / .npz"),
    (b'{"Loop": "wrap", "Frames": [[0.03, 0.1', "motion JSON could not be parsed (Expecting ',' delimiter at char 38)"),
    ('{"Loop": "wrap", "Frames": [[', "motion JSON could not be parsed (Expecting value at char 29)"),
    (b"[1, 2, 3]", "motion JSON must be an object with a 'Frames' list (DeepMimic's motion format)"),
    ({"Loop": "wrap"}, "motion JSON must be an object with a 'Frames' list (DeepMimic's motion format)"),
    ({"Frames": []}, "motion has no frames"),
    ({"Frames": [list(range(44)), list(range(40))]},
     "motion frame 1 has 40 values; a DeepMimic humanoid frame has 44: duration, root position (3), root rotation "
     "wxyz (4), then per joint a wxyz quaternion (chest, neck, hips, ankles, shoulders) or one angle (knees, elbows)"),
    ({"Frames": [[0.1] * 43 + ["a"]]}, "motion frame 0 is not a list of numbers"),
    ({"Frames": [[0.1] * 43 + [None]]}, "motion frame 0 is not a list of numbers"),
    ({"Frames": [[0.1] * 43 + [True]]}, "motion frame 0 is not a list of numbers"),
    ({"Frames": [5]}, "motion frame 0 is not a list of numbers"),
    ('{"Frames": [[' + ", ".join(["NaN"] * 44) + "]]}", "motion has NaN or infinite values"),
    (_frames_with(_set((2, 20), np.inf)), "motion has NaN or infinite values"),
    (npy(_frames_with(_set((3, 9), np.nan))), "motion has NaN or infinite values"),
    (_frames_with(_set((2, 0), 0.0)), "motion frame 2 has a non-positive duration (0)"),
    (_frames_with(_set((0, 0), -0.5)), "motion frame 0 has a non-positive duration (-0.5)"),
    (_frames_with(_set((3, slice(16, 20)), 0.0)), "motion frame 3 has a zero quaternion (right_hip)"),
    (_frames_with(_set((1, slice(4, 8)), 0.0)), "motion frame 1 has a zero quaternion (root)"),
    (np.zeros((4, 43)), "motion array must be T x 44 DeepMimic frames (got shape [4, 43])"),
    (np.zeros(44), "motion array must be T x 44 DeepMimic frames (got shape [44])"),
    (np.array([["a"] * 44]), "motion array must hold real numbers (got <U1)"),
    (np.ones((2, 44), bool), "motion array must hold real numbers (got bool)"),
    (npy(rest_frames(3))[:60], "motion array could not be read (ValueError)"),
    (npy(np.array([{"a": 1}], dtype=object), dtype=None), "motion array could not be read (ValueError)"),
    (npz(a=rest_frames(2), b=rest_frames(2)), "motion .npz has no 'frames' array (it has a, b)"),
    (npz(frames=rest_frames(3))[:100], "motion array could not be read (BadZipFile)"),
]


@pytest.mark.parametrize("value,reason", REJECTS, ids=[f"r{i}" for i in range(len(REJECTS))])
def test_bad_motion_is_rejected_with_its_reason(value, reason, mctx):
    with pytest.raises(RejectRow) as e:
        MOTION.materialise(value, {}, mctx)
    assert e.value.reason == reason  # exact, deterministic text (rejects.jsonl is byte-identical)
    assert str(mctx.base_dir) not in e.value.reason


def test_a_one_frame_clip_is_a_pose_without_velocities(mctx):
    out = MOTION.materialise(doc(rest_frames(1)), {}, mctx)
    assert out.array.shape == (1, FEATURES) and out.meta == {"frames": 1, "seconds": 0.0, "frame_seconds": 0.0}


def test_same_input_gives_identical_bytes(mctx):
    data = clip_path("backflip").read_bytes()
    first, second = MOTION.materialise(data, {}, mctx), MOTION.materialise(bytes(data), {}, mctx)
    assert first.array.tobytes() == second.array.tobytes()


# ----- collation and the adaptor -------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch() -> list[np.ndarray]:
    """Three real clips of different lengths (39, 25 and 29 frames)."""
    ctx = RowContext(vocab=None, image_size=32)
    arrays = [MOTION.materialise(clip_path(n).read_bytes(), {}, ctx).array for n in ("walk", "run", "backflip")]
    assert [a.shape[0] for a in arrays] == [39, 25, 29]
    return arrays


def test_collate_pads_with_zeros_and_masks(batch):
    out, mask = MOTION.collate(batch, {}, None)
    assert out.shape == (3, 39, FEATURES) and out.dtype == np.float32
    assert mask.dtype == bool and mask.sum(1).tolist() == [39, 25, 29]
    for i, a in enumerate(batch):
        n = a.shape[0]
        np.testing.assert_array_equal(out[i, :n], a.astype(np.float32))
        assert mask[i, :n].all() and not mask[i, n:].any() and not out[i, n:].any()
    again, _ = MOTION.collate(batch, {}, [np.random.default_rng(s) for s in (1, 2, 3)])
    np.testing.assert_array_equal(again, out)  # nothing is augmented


@pytest.mark.parametrize("subsample,positions", [(1, [39, 25, 29]), (2, [20, 13, 15]), (3, [13, 9, 10])])
def test_adaptor_positions_and_padding_independence(batch, subsample, positions):
    import torch

    from ofasys.model.config import ModelConfig

    cfg = ModelConfig(adaptors={"IMAGE": {}, "MOTION": {"subsample": subsample, "hidden": 64}})
    assert [MOTION.encoder_positions(a, {}, cfg) for a in batch] == positions
    torch.manual_seed(0)
    adaptor = MOTION.build_adaptor(cfg).eval()
    frames, mask = MOTION.collate(batch, {}, None)
    with torch.no_grad():
        x, out_mask = adaptor(torch.from_numpy(frames), torch.from_numpy(mask))
        assert x.shape == (3, max(positions), cfg.d_model) and out_mask.dtype == torch.bool
        assert out_mask.sum(1).tolist() == positions
        assert all(out_mask[i, :p].all() and not out_mask[i, p:].any() for i, p in enumerate(positions))
        for i, a in enumerate(batch):
            f1, m1 = MOTION.collate([a], {}, None)
            x1, o1 = adaptor(torch.from_numpy(f1), torch.from_numpy(m1))
            assert x1.shape[1] == positions[i] and o1.all()
            torch.testing.assert_close(x[i, : positions[i]], x1[0], atol=1e-5, rtol=1e-5)
            x2, o2 = adaptor(torch.from_numpy(f1), None)  # no mask = all real
            assert o2.all()
            torch.testing.assert_close(x2, x1)
        # frames reach the output: changing one frame changes its position (and only its group)
        f2 = frames.copy()
        f2[0, 5] += 1.0
        y, _ = adaptor(torch.from_numpy(f2), torch.from_numpy(mask))
        changed = (y - x).abs().sum(-1)[0] > 0
        assert changed.nonzero().flatten().tolist() == [5 // subsample]


def test_adaptor_settings_are_validated():
    from ofasys.model.config import ModelConfig

    assert MotionAdaptorConfig().positions(10) == 10 and MotionAdaptorConfig(subsample=4).positions(10) == 3
    with pytest.raises(ValueError, match="adaptors.MOTION: subsample must be positive, got 0"):
        ModelConfig(adaptors={"MOTION": {"subsample": 0}})
    with pytest.raises(ValueError, match="adaptors.MOTION: hidden must be positive, got -1"):
        ModelConfig(adaptors={"MOTION": {"hidden": -1}})
    with pytest.raises(ValueError, match="adaptors.MOTION"):
        ModelConfig(adaptors={"MOTION": {"layers": 2}})


def test_importing_the_modality_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; import ofasys.modalities.motion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
