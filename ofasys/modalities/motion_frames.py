"""DeepMimic humanoid frames and the MOTION features: reading clips, frames -> features, and back.

What the MOTION modality (`ofasys.modalities.motion`) stores and generates, kept apart from the
modality class so that the geometry (numpy only) is one module and the modality another.

The raw format is DeepMimic's motion file, `{"Loop": "wrap" | "none", "Frames": [[...], ...]}`, one
row of 44 numbers per frame: the frame's duration in seconds (time to the next frame; the last row's
is unused), the root position x, y, z in metres (y is up), the root rotation as a quaternion
w, x, y, z, then the twelve joints in the order of `JOINTS`: a w, x, y, z quaternion (relative to
the parent) for a spherical joint, one angle in radians about the joint's z axis for a revolute one
(knees and elbows). The layout is the one pybullet reads: `HumanoidPoseInterpolator.Slerp` and
`GetPose` in pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py (frame indices 8-11 chest,
12-15 neck, 16-19 right hip, 20 right knee, ..., 43 left elbow), with the revolute axes of
pybullet_data/humanoid/humanoid.urdf (`<axis xyz="0 0 1"/>` on right_knee, right_elbow, left_knee,
left_elbow). pybullet's `pybullet_data/data/motions/humanoid3d_*.txt` are such files.

A value is a path to such a file (relative paths against the row's `base_dir`), its bytes, its text
(a string starting with "{"), the parsed dict, or the frames as an array: a T x 44 number array of
the same rows (in memory, or .npy / .npz bytes or files; an .npz holds it as `frames` or as its only
array; loaded without pickle). Bytes and files are recognised by content (.npy magic, zip magic,
else UTF-8 JSON), whatever the file's extension (DeepMimic's own are .txt).

Materialisation (once) turns every frame into `FEATURES` = 82 numbers, all independent of where the
performer stands and which way they face (the global yaw of a capture is arbitrary):
- 12 x 6: each joint's rotation as the first two columns of its rotation matrix (Zhou et al. 2019,
  "On the Continuity of Rotation Representations in Neural Networks": continuous, unlike quaternions
  or Euler angles); a revolute joint is its rotation about z, through the same matrix;
- 3: the up direction (world +y) in the root's frame: the root's tilt, without its yaw (lying,
  upside down, leaning);
- 3: the root's linear velocity in its own frame (m/s), 3: its angular velocity in its own frame
  (rad/s), both from consecutive frames and their durations, so clips of any frame rate give the
  same units (the first frame repeats the second's; a one-frame clip has none);
- 1: the root's height (m).
Quaternions are normalised first (files store them rounded). Then `sample_rate=n` keeps every n-th
frame (velocities stay those of the full-rate clip), `min_length` rejects a clip with fewer kept
frames, and `max_length` keeps the first frames. The sample's meta holds the raw frame count and the
clip's duration.

Generated motion goes back the other way: `frames_from_features` rebuilds playable DeepMimic frames
from (possibly off-manifold) T x 82 features, and `save_motion` writes them as .npz or DeepMimic JSON.
The root's yaw and floor position are not in the features, so a rebuilt clip starts at x = z = 0
facing the identity heading; everything the features hold comes back.

Bad input is a rejected row with a deterministic reason: a missing value or file, bytes that are not
JSON / .npy / .npz, malformed JSON (cut short, wrong structure), frames of the wrong width or with
non-numbers, NaN or infinite values, a non-positive frame duration, a zero quaternion, or fewer
frames than `min_length`.
"""


from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ofasys.modalities.base import RejectRow, is_missing, media_path

JOINTS: tuple[tuple[str, int, str], ...] = (
    ("chest", 8, "spherical"),
    ("neck", 12, "spherical"),
    ("right_hip", 16, "spherical"),
    ("right_knee", 20, "revolute"),
    ("right_ankle", 21, "spherical"),
    ("right_shoulder", 25, "spherical"),
    ("right_elbow", 29, "revolute"),
    ("left_hip", 30, "spherical"),
    ("left_knee", 34, "revolute"),
    ("left_ankle", 35, "spherical"),
    ("left_shoulder", 39, "spherical"),
    ("left_elbow", 43, "revolute"),
)
"""(name, index of its first number in a frame row, joint type) in DeepMimic's frame order."""
FRAME_WIDTH = 44
"""Numbers per DeepMimic humanoid frame: duration, root position (3), root rotation (4), 8 spherical
joints x 4 and 4 revolute joints x 1."""
ROOT_POSITION, ROOT_ROTATION = 1, 4
"""Frame indices of the root's position (x, y, z) and rotation (w, x, y, z)."""
FEATURES = 6 * len(JOINTS) + 10
"""Stored numbers per frame: 6-D per joint, then up direction, linear and angular velocity (3 each)
and height of the root (see the module docstring)."""
FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}.r{i}{j}" for name, _, _ in JOINTS for j in (0, 1) for i in (0, 1, 2)),
    "root.up_x", "root.up_y", "root.up_z", "root.vel_x", "root.vel_y", "root.vel_z",
    "root.angvel_x", "root.angvel_y", "root.angvel_z", "root.height",
)
"""What each stored column is: `<joint>.r<row><column>` is that rotation matrix entry."""
FRAME_LAYOUT = ("duration, root position (3), root rotation wxyz (4), then per joint a wxyz quaternion "
                "(chest, neck, hips, ankles, shoulders) or one angle (knees, elbows)")
_ZERO_QUATERNION = 1e-6


# ----- reading -----------------------------------------------------------------------------------

def read_frames(value: Any, base_dir: Path | None = None) -> tuple[np.ndarray, Any]:
    """(T x 44 float64 DeepMimic frames, the JSON's "Loop" value or None) of any supported raw value,
    or RejectRow. Values are checked for shape and finiteness; quaternions are not normalised yet."""
    if is_missing(value):
        raise RejectRow("missing motion")
    if isinstance(value, np.ndarray):
        return _array_frames(value), None
    if isinstance(value, Mapping):
        return _json_frames(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value.lstrip().startswith("{"):
        return _json_frames(_parse_json(value))
    elif isinstance(value, (str, Path)):
        data = _read_file(value, base_dir)
    else:
        raise RejectRow(f"unsupported motion value ({type(value).__name__})")
    if not data.strip():
        raise RejectRow("missing motion")
    if data.startswith(b"\x93NUMPY") or data.startswith(b"PK\x03\x04"):
        return _array_frames(_load_array(data)), None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RejectRow("motion bytes are neither UTF-8 JSON nor .npy / .npz") from None
    return _json_frames(_parse_json(text))


def _read_file(value: str | Path, base_dir: Path | None) -> bytes:
    return media_path(value, base_dir, "motion").read_bytes()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RejectRow(f"motion JSON could not be parsed ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise RejectRow("motion JSON could not be parsed (nested too deeply)") from None


def _load_array(data: bytes) -> np.ndarray:
    """The frames of .npy or .npz bytes, never unpickling anything."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            names = list(loaded.files)
            if "frames" in names:
                return loaded["frames"]
            if len(names) == 1:
                return loaded[names[0]]
    except Exception as exc:  # numpy and zipfile raise many types for bad data; keep the reason deterministic
        raise RejectRow(f"motion array could not be read ({type(exc).__name__})") from None
    raise RejectRow(f"motion .npz has no 'frames' array (it has {', '.join(sorted(names)) or 'none'})")


def _array_frames(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    if kind not in "iuf":  # bool, complex, strings and objects are not coordinates
        raise RejectRow(f"motion array must hold real numbers (got {array.dtype})")
    if array.ndim != 2 or array.shape[1] != FRAME_WIDTH:
        raise RejectRow(f"motion array must be T x {FRAME_WIDTH} DeepMimic frames (got shape {list(array.shape)})")
    return _checked(array.astype(np.float64))


def _json_frames(doc: Any) -> tuple[np.ndarray, Any]:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Frames"), list):
        raise RejectRow("motion JSON must be an object with a 'Frames' list (DeepMimic's motion format)")
    rows = doc["Frames"]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise RejectRow(f"motion frame {i} is not a list of numbers")
        if len(row) != FRAME_WIDTH:
            raise RejectRow(f"motion frame {i} has {len(row)} values; a DeepMimic humanoid frame has "
                            f"{FRAME_WIDTH}: {FRAME_LAYOUT}")
        if not all(type(v) in (int, float) for v in row):  # bool and None are not numbers here
            raise RejectRow(f"motion frame {i} is not a list of numbers")
    frames = np.asarray(rows, dtype=np.float64).reshape(len(rows), FRAME_WIDTH)
    return _checked(frames), doc.get("Loop")


def _checked(frames: np.ndarray) -> np.ndarray:
    if frames.shape[0] == 0:
        raise RejectRow("motion has no frames")
    if not np.isfinite(frames).all():
        raise RejectRow("motion has NaN or infinite values")
    bad = np.flatnonzero(frames[:-1, 0] <= 0)
    if bad.size:
        raise RejectRow(f"motion frame {int(bad[0])} has a non-positive duration ({frames[bad[0], 0]:g})")
    for name, start in (("root", ROOT_ROTATION), *((n, s) for n, s, kind in JOINTS if kind == "spherical")):
        zero = np.flatnonzero(np.linalg.norm(frames[:, start : start + 4], axis=1) < _ZERO_QUATERNION)
        if zero.size:
            raise RejectRow(f"motion frame {int(zero[0])} has a zero quaternion ({name})")
    return frames


# ----- rotations ---------------------------------------------------------------------------------

def normalised(q: np.ndarray) -> np.ndarray:
    """... x 4 quaternions scaled to unit length."""
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_matrix(q: np.ndarray) -> np.ndarray:
    """... x 4 unit quaternions (w, x, y, z) -> ... x 3 x 3 rotation matrices."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of ... x 4 quaternions (w, x, y, z): rotate by b, then by a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def rotation_vector(q: np.ndarray) -> np.ndarray:
    """... x 4 unit quaternions -> ... x 3 axis * angle of the shortest rotation (angle in [0, pi])."""
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(n, q[..., :1])
    scale = np.where(n > 1e-12, angle / np.maximum(n, 1e-12), 2.0)  # small angles: 2 v (w ~ 1)
    return v * scale


def about_z(angle: np.ndarray) -> np.ndarray:
    """... angles -> ... x 4 quaternions of those rotations about z (a revolute joint's axis)."""
    half = np.asarray(angle) / 2.0
    zeros = np.zeros_like(half)
    return np.stack([np.cos(half), zeros, zeros, np.sin(half)], -1)


def six_d(matrices: np.ndarray) -> np.ndarray:
    """... x 3 x 3 -> ... x 6: the first column, then the second (Zhou et al. 2019)."""
    return np.concatenate([matrices[..., :, 0], matrices[..., :, 1]], -1)


def features(frames: np.ndarray) -> np.ndarray:
    """T x 44 checked DeepMimic frames -> T x `FEATURES` float64 (see the module docstring)."""
    t = frames.shape[0]
    joints = []
    for _, start, kind in JOINTS:
        q = normalised(frames[:, start : start + 4]) if kind == "spherical" else about_z(frames[:, start])
        joints.append(six_d(quat_matrix(q)))
    root_q = normalised(frames[:, ROOT_ROTATION : ROOT_ROTATION + 4])
    root = quat_matrix(root_q)  # T x 3 x 3, body -> world
    position = frames[:, ROOT_POSITION : ROOT_POSITION + 3]
    up = root[:, 1, :]  # R^T e_y: world up in the root's frame
    velocity = np.zeros((t, 3))
    angular = np.zeros((t, 3))
    if t > 1:
        dt = frames[:-1, :1]
        world = (position[1:] - position[:-1]) / dt
        velocity[1:] = np.einsum("tji,tj->ti", root[1:], world)  # R^T v
        angular[1:] = rotation_vector(quat_multiply(quat_conjugate(root_q[:-1]), root_q[1:])) / dt
        velocity[0], angular[0] = velocity[1], angular[1]
    return np.concatenate([*joints, up, velocity, angular, position[:, 1:2]], axis=1)


# ----- features back to frames (generation output) ---------------------------------------------

_JOINT_COLUMNS = 6 * len(JOINTS)
_UP, _VELOCITY, _ANGULAR, _HEIGHT = (_JOINT_COLUMNS + i for i in (0, 3, 6, 9))
"""Feature columns where the root's up direction, linear and angular velocity (3 each) and height start."""
_DEGENERATE = 1e-8
"""Below this length a generated vector has no usable direction (a model may emit near-zero 6-D)."""
SAVE_SUFFIXES = (".npz", ".json", ".txt")
"""File suffixes `save_motion` writes: .npz arrays, or DeepMimic motion JSON (DeepMimic's own are .txt)."""


def _unit_or(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """... x 3 vectors scaled to unit length; `fallback` (... x 3 unit) where a vector is ~zero, so a
    degenerate model output still yields a valid rotation instead of NaN."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > _DEGENERATE, v / np.maximum(n, _DEGENERATE), fallback)


def _perpendicular(b: np.ndarray) -> np.ndarray:
    """... x 3 unit vectors -> a unit vector perpendicular to each (crossed with the axis it is least
    aligned with), the deterministic second column when the generated one is parallel to the first."""
    axes = np.eye(3)[np.argmin(np.abs(b), axis=-1)]
    return _unit_or(np.cross(b, axes), axes)


def matrix_from_six_d(six: np.ndarray) -> np.ndarray:
    """... x 6 (first column, then second) -> ... x 3 x 3 rotation matrices by Gram-Schmidt (Zhou et al.
    2019): the first column keeps its direction, the second loses its component along it, the third is
    their cross product. Generated 6-D vectors are neither unit nor orthogonal; this is the map the
    representation was designed with, so it is defined (and continuous) for any non-degenerate input."""
    six = np.asarray(six, dtype=np.float64)
    b1 = _unit_or(six[..., :3], np.array([1.0, 0.0, 0.0]))
    a2 = six[..., 3:]
    b2 = _unit_or(a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1, _perpendicular(b1))
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def matrix_quat(m: np.ndarray) -> np.ndarray:
    """... x 3 x 3 rotation matrices -> ... x 4 unit quaternions (w, x, y, z), w >= 0. Shepperd's method:
    of the four ways to read a quaternion off the matrix, each uses the component of largest magnitude
    as divisor, so none divides by a near-zero number (the trace formula alone fails near 180 degrees)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    candidates = np.stack([  # each is 4 * (its own component) * q
        np.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        np.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)
    diagonal = np.diagonal(candidates, axis1=-2, axis2=-1)
    best = np.argmax(diagonal, axis=-1)[..., None, None]
    q = normalised(np.take_along_axis(candidates, best, axis=-2)[..., 0, :])
    return np.where(q[..., :1] < 0, -q, q)


def revolute_angle(six: np.ndarray) -> np.ndarray:
    """... x 6 -> ... angles of the rotation about z nearest (Frobenius) to the 6-D's upper-left 2 x 2
    block: atan2(r10 - r01, r00 + r11). On the manifold it is atan2(r10, r00); off it, both columns
    vote rather than the first alone, and a scaled block gives the same angle."""
    r00, r10, r01, r11 = six[..., 0], six[..., 1], six[..., 3], six[..., 4]
    return np.arctan2(r10 - r01, r00 + r11)


def rotation_exp(v: np.ndarray) -> np.ndarray:
    """... x 3 rotation vectors (axis * angle) -> ... x 4 unit quaternions: the inverse of
    `rotation_vector` for angles in [0, pi]."""
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = angle / 2.0
    scale = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)  # small angles: v / 2
    return np.concatenate([np.cos(half), v * scale], axis=-1)


def _level_rotation(up: np.ndarray) -> np.ndarray:
    """The root's starting quaternion: the smallest rotation taking its up direction (world up seen in
    the root frame) to world +y. It has the tilt the features hold and no yaw of its own (yaw is not
    recoverable; this is the identity heading). Upside down (up ~ -y) it is half a turn about x."""
    u = _unit_or(up, np.array([0.0, 1.0, 0.0]))
    q = np.array([1.0 + u[1], -u[2], 0.0, u[0]])  # [1 + u . y, u x y]: the rotation taking u to y
    n = np.linalg.norm(q)
    return q / n if n > 1e-12 else np.array([0.0, 1.0, 0.0, 0.0])


def _root_rotations(feats: np.ndarray, frame_seconds: float) -> np.ndarray:
    """T x 4 root quaternions: the level start, then q_t = q_{t-1} * exp(angular_t * dt), renormalised
    every step so a long clip does not drift off unit length."""
    steps = rotation_exp(feats[1:, _ANGULAR : _ANGULAR + 3] * frame_seconds)
    out = np.empty((feats.shape[0], 4))
    out[0] = _level_rotation(feats[0, _UP : _UP + 3])
    for t, step in enumerate(steps, start=1):
        out[t] = normalised(quat_multiply(out[t - 1], step))
    return out


def _root_positions(feats: np.ndarray, rotations: np.ndarray, frame_seconds: float) -> np.ndarray:
    """T x 3 root positions: x = z = 0 at the start, then p_t = p_{t-1} + R_t v_t dt over the floor; the
    height is the stored one, not integrated, so it cannot drift."""
    world = np.einsum("tij,tj->ti", quat_matrix(rotations), feats[:, _VELOCITY : _VELOCITY + 3]) * frame_seconds
    world[0] = 0.0  # frame 0's velocity is a copy of frame 1's, not a step
    position = np.cumsum(world, axis=0)
    position[:, 1] = feats[:, _HEIGHT]
    return position


def _checked_features(feats: np.ndarray) -> np.ndarray:
    """`feats` as T x `FEATURES` float64; ValueError for another shape, non-numbers or NaN / infinity
    (a generation that produced them has no motion to rebuild)."""
    array = np.asarray(feats)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"motion features must be real numbers (got {array.dtype})")
    if array.ndim != 2 or array.shape[1] != FEATURES or array.shape[0] == 0:
        raise ValueError(f"motion features must be T x {FEATURES} with T >= 1 (got shape {list(array.shape)})")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("motion features have NaN or infinite values")
    return array


def frames_from_features(feats: np.ndarray, frame_seconds: float) -> np.ndarray:
    """T x `FEATURES` features (any float dtype; a model's output need not be on the rotation manifold)
    -> T x `FRAME_WIDTH` float64 DeepMimic frames that `features` maps back to the same features.

    Joints: 6-D -> Gram-Schmidt matrix -> unit quaternion (w >= 0), a revolute joint its nearest angle
    about z. Root: starts at x = z = 0 facing the identity heading, tilted as frame 0's up direction
    says, then integrates the angular and linear velocity (each frame's velocities are those of the step
    into it); the height is the stored one. Every frame lasts `frame_seconds` but the last, whose
    duration is 0, as in DeepMimic files."""
    if not frame_seconds > 0 or not np.isfinite(frame_seconds):
        raise ValueError(f"frame_seconds must be a positive number, got {frame_seconds}")
    feats = _checked_features(feats)
    t = feats.shape[0]
    frames = np.zeros((t, FRAME_WIDTH))
    frames[:-1, 0] = frame_seconds
    rotations = _root_rotations(feats, frame_seconds)
    frames[:, ROOT_ROTATION : ROOT_ROTATION + 4] = rotations
    frames[:, ROOT_POSITION : ROOT_POSITION + 3] = _root_positions(feats, rotations, frame_seconds)
    for j, (_, start, kind) in enumerate(JOINTS):
        six = feats[:, 6 * j : 6 * j + 6]
        if kind == "spherical":
            frames[:, start : start + 4] = matrix_quat(matrix_from_six_d(six))
        else:
            frames[:, start] = revolute_angle(six)
    return frames


def _write_atomically(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, then move it over `path`: a reader never
    sees a half-written clip, and a failure leaves any previous file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_motion(path: str | Path, feats: np.ndarray, frame_seconds: float) -> Path:
    """Write generated features as playable motion; returns the path. `.npz`: arrays `features`
    (float32 T x 82, as given), `frames` (float64 T x 44, `frames_from_features`) and `frame_seconds`;
    `.json` / `.txt`: a DeepMimic motion file `{"Loop": "none", "Frames": [...]}` (what pybullet's
    DeepMimic player and `read_frames` read). Other suffixes are a ValueError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(f"save_motion: unsupported suffix {path.suffix!r} of {path}; "
                         f"supported: {', '.join(SAVE_SUFFIXES)}")
    frames = frames_from_features(feats, frame_seconds)
    if suffix == ".npz":
        arrays = {"features": _checked_features(feats).astype(np.float32), "frames": frames,
                  "frame_seconds": np.float64(frame_seconds)}
        _write_atomically(path, lambda f: np.savez(f, **arrays))
    else:
        text = json.dumps({"Loop": "none", "Frames": frames.tolist()})  # float repr round-trips exactly
        _write_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return path
