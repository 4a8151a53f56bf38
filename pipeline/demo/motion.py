"""Windows of real motion-capture clips labelled with their action, for motion classification.

Source: the DeepMimic humanoid clips the `pybullet` wheel ships under
`pybullet_data.getDataPath()/data/motions/humanoid3d_<name>.txt` (walk, run, jump, backflip,
cartwheel, crawl, two dances, kick, punch, roll, spin, two get-ups; one performance each, 16-60 fps).
The spin kick is left out: it is both a spin and a kick, so its label would contradict both. A row
is a window of `WINDOW` frames at `FPS` cut from one clip, `label` the clip's action word (`LABELS`,
equally likely; "dance" and "get up" draw one of their two clips).

Why this shape: the tiny CPU model learns a small label space with a clear signal; the actions
differ in rhythm, speed, height and rotation, which the materialised features (joint rotations and
the root's yaw-free velocity, tilt and height, see `ofasys.modalities.motion`) show directly.

Windows: every clip is resampled on a `FPS` grid (position and revolute angles interpolated linearly,
quaternions by slerp, as pybullet's `HumanoidPoseInterpolator` does between key frames), played at a
seeded speed in `SPEEDS` (so windows of one clip differ in tempo, not only in phase), from a seeded
start. Clips marked `"Loop": "wrap"` continue past their end into the next cycle, the root carried on
by the clip's horizontal displacement per cycle (DeepMimic's cycle offset; some clips' last frame
differs a little from their first, e.g. the walk's right shoulder, so a wrapped window can hold one
small jump per cycle, as DeepMimic's own playback does); the others ("none": kick, punch, the
get-ups) are cut inside the clip, shortened when the clip is shorter than the window.
Each window is turned to a seeded heading and moved to a seeded place on the floor (light
augmentation that the materialised features must not see).

Held out: each clip's timeline of start points (its cycle, or its clip length minus the window for
the non-looping ones) is cut into `SPLIT_FRACTIONS`; a split draws starts only from its own part.
The package holds one performance per action, so valid and test windows show poses train windows
also contain at other phases, speeds and headings: they test that, not other performers.

Storage: a DeepMimic JSON document (`{"Loop": "none", "Frames": ...}`, numbers rounded to
`DECIMALS`, the last frame's duration 0 as in DeepMimic's files) for most rows, an .npy of the T x 44
float32 frames for `NPY_SHARE` of them; both are deterministic bytes. Damaged rows (`DAMAGE`): the
JSON cut in half, or a valid clip of `SHORT_FRAMES` frames that a slot with `min_length` rejects
(`sample_rate=2,min_length=16` leaves it 4 frames).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ofasys.modalities.motion_frames import FRAME_WIDTH, JOINTS, ROOT_POSITION, ROOT_ROTATION, normalised, read_frames

LABELS: dict[str, tuple[str, ...]] = {
    "walk": ("walk",),
    "run": ("run",),
    "jump": ("jump",),
    "backflip": ("backflip",),
    "cartwheel": ("cartwheel",),
    "crawl": ("crawl",),
    "dance": ("dance_a", "dance_b"),
    "kick": ("kick",),
    "punch": ("punch",),
    "roll": ("roll",),
    "spin": ("spin",),
    "get up": ("getup_facedown", "getup_faceup"),
}
"""Label -> the clips (`humanoid3d_<clip>.txt`) it is drawn from."""
FPS = 60
"""Frames per second of every window (DeepMimic's usual capture rate)."""
WINDOW = (60, 90)
"""Inclusive range of frames per window: 1 to 1.5 s (30-45 frames after sample_rate=2)."""
SPEEDS = (0.9, 1.1)
"""Range of the playback speed (clip seconds per window second)."""
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
"""Part of each clip's timeline of start points a split draws from."""
NPY_SHARE = 0.25
"""Share of rows stored as .npy frames instead of DeepMimic JSON."""
DECIMALS = 5
"""Decimals kept in the JSON (1e-5 m, 1e-5 of a unit quaternion: far below what motion shows)."""
DAMAGE = ("truncated", "short")
"""Kinds of damaged rows: the JSON cut in half, a clip of `SHORT_FRAMES` frames."""
SHORT_FRAMES = 8
_SPHERICAL = tuple(start for _, start, kind in JOINTS if kind == "spherical")
_REVOLUTE = tuple(start for _, start, kind in JOINTS if kind == "revolute")


def motions_dir() -> Path:
    """pybullet_data's DeepMimic motions directory, or a one-line FileNotFoundError with the fix."""
    try:
        import pybullet_data
    except ImportError:
        raise FileNotFoundError("pybullet_data: not installed; the motion demo reads the DeepMimic clips of the "
                                "pybullet wheel (pip install pybullet==3.2.7, pinned in requirements.txt)") from None
    path = Path(pybullet_data.getDataPath()) / "data" / "motions"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not found; reinstall the pybullet wheel (pip install pybullet==3.2.7)")
    return path


def clip_file(name: str) -> Path:
    return motions_dir() / f"humanoid3d_{name}.txt"


@dataclass(frozen=True)
class Clip:
    """One DeepMimic clip: key frames (quaternions normalised) and their times."""

    name: str
    loop: bool
    frames: np.ndarray  # N x 44
    times: np.ndarray  # N, seconds; times[-1] is the clip's length (a looping clip's cycle)

    @property
    def length(self) -> float:
        return float(self.times[-1])

    @property
    def cycle_offset(self) -> np.ndarray:
        """The root's horizontal displacement over the clip (y kept: a cycle ends at its start height)."""
        offset = self.frames[-1, ROOT_POSITION : ROOT_POSITION + 3] - self.frames[0, ROOT_POSITION : ROOT_POSITION + 3]
        return offset * np.array([1.0, 0.0, 1.0])


@functools.cache
def load_clip(name: str) -> Clip:
    """The clip `humanoid3d_<name>.txt`, read by the MOTION modality's own reader."""
    frames, loop = read_frames(clip_file(name).read_bytes())
    frames = frames.copy()
    for start in (ROOT_ROTATION, *_SPHERICAL):
        frames[:, start : start + 4] = normalised(frames[:, start : start + 4])
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
    return Clip(name, loop == "wrap", frames, times)


def motions_fingerprint() -> str:
    """sha256 over the clip files the demo reads (name and bytes, in `LABELS` order)."""
    h = hashlib.sha256()
    for clips in LABELS.values():
        for name in clips:
            h.update(name.encode() + b"\0" + clip_file(name).read_bytes())
    return h.hexdigest()


def slerp(a: np.ndarray, b: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Shortest-path spherical interpolation of ... x 4 unit quaternions at ... fractions."""
    dot = np.sum(a * b, -1, keepdims=True)
    b = np.where(dot < 0, -b, b)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    f = frac[..., None]
    theta = np.arccos(dot)
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    wa = np.where(near, 1.0 - f, np.sin((1.0 - f) * theta) / safe)
    wb = np.where(near, f, np.sin(f * theta) / safe)
    return normalised(wa * a + wb * b)


def pose_at(clip: Clip, t: np.ndarray) -> np.ndarray:
    """W x 44 frames of `clip` at clip times `t` (duration column 0): looping clips wrap into later
    cycles (root moved by the cycle offset), the others are held at their ends."""
    t = np.asarray(t, dtype=np.float64)
    if clip.loop:
        cycles = np.floor(t / clip.length)
        tau = t - cycles * clip.length
    else:
        cycles = np.zeros_like(t)
        tau = np.clip(t, 0.0, clip.length)
    n = len(clip.times)
    i = np.clip(np.searchsorted(clip.times, tau, side="right") - 1, 0, n - 2)
    frac = np.clip((tau - clip.times[i]) / (clip.times[i + 1] - clip.times[i]), 0.0, 1.0)
    a, b = clip.frames[i], clip.frames[i + 1]
    out = a + frac[:, None] * (b - a)  # positions and revolute angles
    out[:, 0] = 0.0
    out[:, ROOT_POSITION : ROOT_POSITION + 3] += cycles[:, None] * clip.cycle_offset
    for start in (ROOT_ROTATION, *_SPHERICAL):
        out[:, start : start + 4] = slerp(a[:, start : start + 4], b[:, start : start + 4], frac)
    return out


def turned(frames: np.ndarray, yaw: float, place: tuple[float, float]) -> np.ndarray:
    """`frames` with the root's path started at `place` (x, z) and the whole motion turned by `yaw`
    radians about the vertical (y) axis: the same motion seen from elsewhere."""
    out = frames.copy()
    pos = out[:, ROOT_POSITION : ROOT_POSITION + 3]
    x, z = pos[:, 0] - pos[0, 0], pos[:, 2] - pos[0, 2]
    c, s = np.cos(yaw), np.sin(yaw)
    pos[:, 0] = c * x + s * z + place[0]
    pos[:, 2] = -s * x + c * z + place[1]
    turn = np.array([np.cos(yaw / 2), 0.0, np.sin(yaw / 2), 0.0])
    w1, x1, y1, z1 = turn
    q = out[:, ROOT_ROTATION : ROOT_ROTATION + 4]
    w2, x2, y2, z2 = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    out[:, ROOT_ROTATION : ROOT_ROTATION + 4] = np.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], -1)
    return out


@dataclass(frozen=True)
class Window:
    """Everything that determines one row's clip bytes."""

    label: str
    clip: str
    start: float  # clip seconds
    speed: float
    frames: int
    yaw: float
    place: tuple[float, float]
    storage: str  # "json" | "npy"

    def times(self) -> np.ndarray:
        return self.start + np.arange(self.frames) * (self.speed / FPS)


def start_range(clip: Clip, frames: int, speed: float) -> float:
    """Length of the timeline of possible starts: the cycle of a looping clip, else what the window
    leaves of the clip."""
    if clip.loop:
        return clip.length
    return max(clip.length - (frames - 1) * speed / FPS, 0.0)


def draw(rng: np.random.Generator, split: str) -> Window:
    """One window of `split`; always the same number of draws, so rows never shift each other."""
    label = list(LABELS)[int(rng.integers(len(LABELS)))]
    names = LABELS[label]
    name = names[int(rng.integers(len(names)))]
    speed = round(float(rng.uniform(*SPEEDS)), 3)
    frames = int(rng.integers(WINDOW[0], WINDOW[1] + 1))
    u = float(rng.random())
    yaw = round(float(rng.uniform(0.0, 2.0 * np.pi)), 4)
    place = (round(float(rng.uniform(-2.0, 2.0)), 3), round(float(rng.uniform(-2.0, 2.0)), 3))
    storage = "npy" if float(rng.random()) < NPY_SHARE else "json"
    clip = load_clip(name)
    if not clip.loop:  # a window no longer than the clip
        frames = min(frames, int(np.floor(clip.length * FPS / speed + 1e-9)) + 1)
    lo, hi = SPLIT_FRACTIONS[split]
    start = (lo + u * (hi - lo)) * start_range(clip, frames, speed)
    return Window(label, name, round(start, 6), speed, frames, yaw, place, storage)


def render(window: Window) -> np.ndarray:
    """The window's T x 44 DeepMimic frames: durations 1/FPS (the last 0), turned and placed."""
    frames = pose_at(load_clip(window.clip), window.times())
    frames[:-1, 0] = 1.0 / FPS
    return turned(frames, window.yaw, window.place)


def encode(frames: np.ndarray, storage: str) -> bytes:
    """DeepMimic JSON (rounded to `DECIMALS`) or .npy (float32) bytes of T x 44 frames."""
    if frames.ndim != 2 or frames.shape[1] != FRAME_WIDTH:
        raise ValueError(f"frames must be T x {FRAME_WIDTH}, got shape {list(frames.shape)}")
    if storage == "json":
        rows = (np.round(frames, DECIMALS) + 0.0).tolist()  # + 0.0: no "-0.0"
        body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
        return ('{"Loop":"none","Frames":[\n' + body + "\n]}\n").encode()
    if storage == "npy":
        buf = io.BytesIO()
        np.save(buf, frames.astype("<f4"), allow_pickle=False)
        return buf.getvalue()
    raise ValueError(f"storage must be json or npy, got {storage!r}")


def damaged(window: Window, kind: str) -> bytes:
    """A damaged row of `window`: "truncated" (its JSON cut in half) or "short" (its first
    `SHORT_FRAMES` frames, valid JSON that min_length rejects)."""
    if kind == "truncated":
        data = encode(render(window), "json")
        return data[: len(data) // 2]
    if kind == "short":
        frames = render(window)[:SHORT_FRAMES]
        frames[-1, 0] = 0.0
        return encode(frames, "json")
    raise ValueError(f"unknown damage {kind!r}; known: {', '.join(DAMAGE)}")


def label_table(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`clip` (DeepMimic JSON or .npy bytes), `label`: the action ("walk", "backflip", "get up", ...)."""
    # tasks imports this module for its registry, so its helpers are imported here, not above
    from importlib.metadata import version

    from pipeline.demo.tasks import _check, _corrupt_rows, _rng, _table

    _check(split, size, corrupt)
    rng = _rng(seed, "motion_label", split)
    bad = _corrupt_rows(seed, "motion_label", split, size, corrupt)
    by_kind = {kind: bad[i :: len(DAMAGE)] for i, kind in enumerate(DAMAGE)}
    damage = {row: kind for kind, rows in by_kind.items() for row in rows}
    clips, labels = [], []
    for row in range(size):
        window = draw(rng, split)
        clips.append(damaged(window, damage[row]) if row in damage else encode(render(window), window.storage))
        labels.append(window.label)
    return _table({"clip": pa.array(clips, pa.binary()), "label": pa.array(labels, pa.string())},
                  "motion_label", split, size, seed, bad, fps=FPS, pybullet=version("pybullet"),
                  motions_sha256=motions_fingerprint(),
                  **{f"corrupt_{kind}_rows": rows for kind, rows in by_kind.items()})
