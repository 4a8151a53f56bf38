"""MOTION: DeepMimic humanoid clips (JSON path / bytes / text, or .npy / .npz frames) -> float16 T x 82.

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

The adaptor (`motion_6d`, the default): optional temporal subsampling (`subsample` consecutive
frames concatenated into one position, like speech's frame stacking) and an MLP frame encoder
(Linear-GELU-Linear to the model width); the encoder adds its 1-D positions. A clip of T frames
takes ceil(T / subsample) encoder positions.

Bad input is a rejected row with a deterministic reason: a missing value or file, bytes that are not
JSON / .npy / .npz, malformed JSON (cut short, wrong structure), frames of the wrong width or with
non-numbers, NaN or infinite values, a non-positive frame duration, a zero quaternion, or fewer
frames than `min_length`.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ofasys.modalities.base import Materialised, Modality, RejectRow, RowContext, is_missing, media_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch.nn as nn

    from ofasys.model.config import ModelConfig

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


def _int_attr(attrs: Mapping[str, Any], key: str, default: int) -> int:
    value = attrs.get(key)
    return default if value is None else int(value)


# ----- the modality ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MotionAdaptorConfig:
    """`model.adaptors.MOTION`: how motion frames become encoder positions."""

    hidden: int = 256
    """Width of the frame MLP's hidden layer."""
    subsample: int = 1
    """Consecutive frames concatenated into one encoder position (1 = one position per frame)."""

    def __post_init__(self) -> None:
        if self.hidden <= 0:
            raise ValueError(f"hidden must be positive, got {self.hidden}")
        if self.subsample <= 0:
            raise ValueError(f"subsample must be positive, got {self.subsample}")

    def positions(self, frames: int) -> int:
        """Encoder positions of a clip of `frames` frames: ceil(frames / subsample)."""
        return -(-int(frames) // self.subsample)


class Motion(Modality):
    name = "MOTION"
    doc = "DeepMimic humanoid clip (JSON / .npy / .npz) -> float16 T x 82 (6-D joint rotations + root); frame MLP"
    dtype = "float16"
    token_run = False
    media_files = True
    shrink_hint = ("add sample_rate= or max_length= (frames) to the MOTION slot, or raise "
                   "model.adaptors.MOTION.subsample")
    attributes = {"MOTION": frozenset({"max_length", "min_length", "preprocess", "adaptor", "disable_auto_boseos",
                                       "sample_rate"})}
    materialise_attrs = ("sample_rate", "max_length", "min_length")
    preprocess = {"default": None, "motion_6d": None}
    adaptors = {"default": None, "motion_6d": None}
    """OFASys lists `text` as MOTION's default adaptor, but only `motion_6d` embeds motion frames."""
    adaptor_config = MotionAdaptorConfig

    def shape(self, image_size: int) -> list[int | None]:
        return [None, FEATURES]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        frames, _ = read_frames(value, ctx.base_dir)
        sample_rate = _int_attr(attrs, "sample_rate", 1)
        feats = features(frames)[::sample_rate]
        min_length = _int_attr(attrs, "min_length", 0)
        if feats.shape[0] < min_length:
            raise RejectRow(f"motion has {feats.shape[0]} frames after sample_rate={sample_rate}, "
                            f"fewer than min_length={min_length}")
        max_length = attrs.get("max_length")
        if max_length:
            feats = feats[: int(max_length)]
        meta = {"frames": int(frames.shape[0]), "seconds": round(float(frames[:-1, 0].sum()), 6)}
        return Materialised(feats.astype(np.float16), meta=meta)

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        return model.adaptor(self.name).positions(array.shape[0])

    def collate(self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                rngs: Sequence[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """B x T x 82 float32 (zero-padded) and the B x T frame mask; nothing is augmented."""
        longest = max(a.shape[0] for a in arrays)
        out = np.zeros((len(arrays), longest, FEATURES), np.float32)
        mask = np.zeros((len(arrays), longest), bool)
        for i, a in enumerate(arrays):
            out[i, : a.shape[0]] = a
            mask[i, : a.shape[0]] = True
        return out, mask

    def build_adaptor(self, model: "ModelConfig") -> "nn.Module":
        return _adaptor_class()(model.adaptor(self.name), model.d_model)


@functools.cache
def _adaptor_class():
    """The motion adaptor's nn.Module class, defined on first use so that importing this file (the
    instruction parser does, when params load) does not import torch."""
    import torch
    import torch.nn as nn

    class MotionAdaptor(nn.Module):
        """B x T x 82 frames + B x T mask -> B x ceil(T / subsample) x d_model + that mask."""

        def __init__(self, config: MotionAdaptorConfig, d_model: int):
            super().__init__()
            self.subsample = config.subsample
            self.mlp = nn.Sequential(
                nn.Linear(FEATURES * config.subsample, config.hidden),
                nn.GELU(),
                nn.Linear(config.hidden, d_model),
            )

        def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None):
            dtype = self.mlp[0].weight.dtype
            x = frames.to(dtype)
            b, t, _ = x.shape
            if mask is None:
                mask = torch.ones((b, t), dtype=torch.bool, device=x.device)
            # padding frames are zero, so a group cut short by the clip's end looks the same whether
            # the clip is alone or padded in a batch
            x = x * mask[..., None].to(dtype)
            k = self.subsample
            pad = (-t) % k
            if pad:
                x = nn.functional.pad(x, (0, 0, 0, pad))
                mask = nn.functional.pad(mask, (0, pad))
            x = x.reshape(b, (t + pad) // k, k * FEATURES)
            keep = mask.reshape(b, (t + pad) // k, k).any(-1)
            return self.mlp(x), keep

    return MotionAdaptor


__all__ = ["FEATURES", "FEATURE_NAMES", "FRAME_WIDTH", "JOINTS", "Motion", "MotionAdaptorConfig", "features",
           "read_frames"]
