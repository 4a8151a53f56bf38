"""MOTION: DeepMimic humanoid clips (JSON path / bytes / text, or .npy / .npz frames) -> float16 T x 82.

The clip format, the 82 features a frame is stored as (6-D joint rotations, the root's tilt,
velocities and height), the rejected inputs and the way back from features to playable frames are in
`ofasys.modalities.motion_frames`; this module is the modality: its slot attributes, its
materialisation (`sample_rate` keeps every n-th frame, `min_length` rejects a shorter clip,
`max_length` keeps the first frames; the meta holds the raw frame count, the duration and one kept
frame's duration), its adaptor and its output head.

The adaptor (`motion_6d`, the default): optional temporal subsampling (`subsample` consecutive
frames concatenated into one position, like speech's frame stacking) and an MLP frame encoder
(Linear-GELU-Linear to the model width); the encoder adds its 1-D positions. A clip of T frames
takes ceil(T / subsample) encoder positions. Generated (an output slot), a clip is made by the
diffusion head (`MotionHeadConfig`, `ofasys.modalities.heads.DiffusionHead`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ofasys.modalities.base import NO_ASSETS, Materialised, Modality, RejectRow, RowContext, check_head_settings
from ofasys.modalities.motion_frames import (  # noqa: F401 - re-exported: what callers import from here
    FEATURE_NAMES,
    FEATURES,
    FRAME_LAYOUT,
    FRAME_WIDTH,
    JOINTS,
    ROOT_POSITION,
    ROOT_ROTATION,
    SAVE_SUFFIXES,
    about_z,
    features,
    frames_from_features,
    matrix_from_six_d,
    matrix_quat,
    normalised,
    quat_conjugate,
    quat_matrix,
    quat_multiply,
    read_frames,
    revolute_angle,
    rotation_exp,
    rotation_vector,
    save_motion,
    six_d,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch.nn as nn

    from ofasys.model.config import ModelConfig


def _int_attr(attrs: Mapping[str, Any], key: str, default: int) -> int:
    value = attrs.get(key)
    return default if value is None else int(value)


@dataclass(frozen=True)
class GeneratedMotion:
    """A generated clip (`OFASys.inference(...).motion`): its features and how long a frame lasts."""

    features: np.ndarray
    """T x 82 float32: 6-D joint rotations and the root's up direction, velocities and height."""
    frame_seconds: float

    @property
    def frames(self) -> np.ndarray:
        """T x 44 DeepMimic humanoid frames (playable in pybullet's DeepMimic environment)."""
        return frames_from_features(self.features, self.frame_seconds)

    def save(self, path: str | Path) -> Path:
        """Write it as .npz (features and frames) or DeepMimic .json / .txt; see `save_motion`."""
        return save_motion(path, self.features, self.frame_seconds)


DEFAULT_FRAME_SECONDS = 1.0 / 30.0
"""Frame duration of a generated clip when its task's statistics do not record the train clips' own."""


def frame_seconds_of(stats: Mapping[str, Any]) -> float:
    """How long one generated frame lasts: the train clips' median (`frame_seconds` of a task's frame
    statistics), else `DEFAULT_FRAME_SECONDS`."""
    return float(stats.get("frame_seconds") or DEFAULT_FRAME_SECONDS)


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


@dataclass(frozen=True)
class MotionHeadConfig:
    """`model.output_heads.MOTION`: the diffusion head that generates clips (`ofasys.modalities.heads`)."""

    hidden: int = 128
    """Width of the denoiser's frames."""
    layers: int = 2
    """Residual convolution blocks over frames."""
    kernel_size: int = 5
    """Frames each convolution sees (odd: padding keeps the frames aligned)."""
    sampling_steps: int = 20
    """DDIM steps from noise to a clip at generation (more: slower, finer)."""
    loss_weight: float = 1.0
    """Weight of the denoising loss beside the placeholders' go-on/stop cross-entropy."""

    def __post_init__(self) -> None:
        check_head_settings(self, ("hidden", "layers", "sampling_steps"))


class Motion(Modality):
    """Read as frames by its adaptor on the input side; generated on the output side, one decoder step
    per stored frame, by a diffusion head conditioned on those steps' states (OFASys's `motion_6d`)."""

    name = "MOTION"
    doc = ("DeepMimic humanoid clip (JSON / .npy / .npz) -> float16 T x 82 (6-D joint rotations + root); frame "
           "MLP in, diffusion head out")
    dtype = "float16"
    token_run = False
    media_files = True
    frame_output = True
    diffusion = True
    output_field = "motion"
    head_config = MotionHeadConfig
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
        seconds = float(frames[:-1, 0].sum())
        meta = {"frames": int(frames.shape[0]), "seconds": round(seconds, 6),
                "frame_seconds": round(seconds / max(frames.shape[0] - 1, 1) * sample_rate, 6)}
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

    def build_output_head(self, model: "ModelConfig") -> "nn.Module":
        from ofasys.modalities.heads import DiffusionHead

        cfg = model.output_head(self.name)
        return DiffusionHead(FEATURES, model.d_model, hidden=cfg.hidden, layers=cfg.layers,
                             kernel_size=cfg.kernel_size, sampling_steps=cfg.sampling_steps,
                             loss_weight=cfg.loss_weight)

    def output_step(self, column, attrs, vocab, *, terminator, closed_labels, default_max, assets=NO_ASSETS):
        return self.frame_output_step(column, attrs, vocab, terminator, assets)

    def decode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Generated frames -> T x 82 float32 features (`frames_from_features` makes them a clip)."""
        return np.asarray(frames, np.float32)

    def typed_output(self, value: Any, stats: Mapping[str, Any]) -> "GeneratedMotion":
        return GeneratedMotion(np.asarray(value, np.float32), frame_seconds_of(stats))

    def save_output(self, value: Any, stem: Path, stats: Mapping[str, Any]) -> Path:
        """An .npz of the features and the DeepMimic frames they make, at the train clips' frame rate."""
        return save_motion(stem.with_name(stem.name + ".npz"), value, frame_seconds_of(stats))


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


__all__ = ["FEATURES", "FEATURE_NAMES", "FRAME_WIDTH", "GeneratedMotion", "JOINTS", "Motion", "MotionAdaptorConfig", "SAVE_SUFFIXES",
           "features", "frames_from_features", "matrix_from_six_d", "matrix_quat", "read_frames",
           "save_motion"]
