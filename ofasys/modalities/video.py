"""VIDEO: mp4 / webm / gif (path or bytes) -> F evenly sampled frames at the task's square image_size,
stored as uint8 pixels (or, with `jpeg_frames`, as JPEGs); per frame the image stem, plus 2-D and
frame positions.

Materialisation (once): PyAV (FFmpeg) decodes the first video stream; `F` frames are taken at the
centres of F equal stretches of the clip (frame `floor((2i + 1) * n / (2F))` of n, so a clip with
fewer than F frames repeats some: every sample of a slot has exactly F frames and a batch needs no
mask). `F` is the slot's `max_length` (default `DEFAULT_FRAMES`, the frame count, not a maximum: the
encoder positions a clip takes are F x grid^2 whatever its length); `min_length` rejects clips with
fewer decoded frames. Each frame is converted to RGB by FFmpeg's bit-exact scaler and squashed to the
square image_size with PIL bicubic (as IMAGE is). The stored array (one `.npy` member per sample,
byte-identical for identical input) is, by default, the frames themselves: F x H x W x 3 uint8, as
IMAGE stores H x W x 3, so collation only stacks them — decoding is work that is the same every
epoch and belongs to materialisation. The slot flag `jpeg_frames` stores each frame JPEG-encoded at a
fixed quality instead (one 1-D uint8 array, see `pack_frames`): ~4x smaller shards for large video
corpora, paid for by a JPEG decode per frame in every batch and JPEG's loss. The flag is part of the
instruction, so the task's params hash, its manifest (the slot's attrs and shape) and on-the-fly
materialisation at inference all follow it. The sample's meta holds the original width, height, fps,
duration (seconds) and decoded frame count.

Collation (per batch) makes B x F x 3 x H x W uint8 (the adaptor turns it into floats on the
device). The adaptor (`video_image_sequence`, the default) runs the image stem of
`ofasys.modalities.image` on every frame (its own weights, keyed "VIDEO" in the model, not shared
with IMAGE), adds the 2-D grid positions and a temporal position per frame, and hands the encoder the
F x grid^2 tokens frame by frame.

Shards of the earlier layout (JPEG frames without the flag) are refused when their manifest is read
(`layout_problem`), naming the fix: re-run materialisation.

Only the mp4/mov, Matroska/webm, AVI and GIF demuxers may open a value, and only local files
(FFmpeg's `format_whitelist` and `protocol_whitelist`): playlists (HLS, ffconcat) and other demuxers
that open further files or URLs are refused.
Bad input is a rejected row with a deterministic reason: a missing value, a path that does not
exist, bytes FFmpeg can't read (truncated, random, another format), a file without a video stream,
a video with no frames, or fewer frames than `min_length`.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage

from ofasys.modalities.base import Materialised, Modality, RejectRow, RowContext, is_missing, media_path
from ofasys.modalities.image import IMAGENET_MEAN, IMAGENET_STD, ImageAdaptorConfig, unit_pixels

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch.nn as nn

    from ofasys.model.config import ModelConfig

DEFAULT_FRAMES = 4
"""Frames sampled from a clip when the slot has no `max_length` (OFASys samples 16 at 224 px; 4 at
the demo's resolution keep a clip at 4 x 64 encoder positions, and 2 already show a motion)."""
JPEG_QUALITY = 90
"""Fixed JPEG quality of stored frames (with fixed 4:2:0 chroma subsampling, no optimisation passes)."""
DEMUXERS = "mov,matroska,gif,avi"
"""FFmpeg demuxers a value may be opened with (mp4/mov/m4v, mkv/webm, gif, avi)."""
CONTAINERS_SHOWN = "mp4/mov, webm/mkv, avi or gif"
_HEADER_WORDS = 2
"""Little-endian uint32 words before the frame offsets: frame count, frame side."""
JPEG_FLAG = "jpeg_frames"
"""The slot flag that stores a clip's frames as JPEGs instead of pixels."""


@dataclass(frozen=True)
class VideoAdaptorConfig(ImageAdaptorConfig):
    """`model.adaptors.VIDEO`: the image settings (stem, stem_channels, patch_size, positions,
    max_grid) of the per-frame stem, plus the temporal positions. `positions` applies to both: learned
    tables (row, column, frame) or fixed sin/cos (any grid size and frame count)."""

    max_frames: int = 16
    """Most frames a clip may have with learned positions (rows of the frame position table)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {self.max_frames}")


# ----- the stored array --------------------------------------------------------------------------

def pack_frames(jpegs: Sequence[bytes], side: int) -> np.ndarray:
    """One 1-D uint8 array holding F JPEG frames of `side` x `side` px: a header of little-endian
    uint32 words [F, side, end_0, ..., end_{F-1}] (end_i: where frame i's bytes end in the payload),
    then the JPEG bytes back to back. One array, so one `.npy` member and no pickle."""
    ends = np.cumsum([len(j) for j in jpegs], dtype=np.int64)
    words = np.asarray([len(jpegs), side, *ends.tolist()], dtype="<u4")
    return np.concatenate([np.frombuffer(words.tobytes(), np.uint8), np.frombuffer(b"".join(jpegs), np.uint8)])


def unpack_frames(array: np.ndarray) -> tuple[int, list[bytes]]:
    """(side, the F JPEG byte strings) of a `pack_frames` array; ValueError if it is not one."""
    data = np.asarray(array)
    if data.dtype != np.uint8 or data.ndim != 1 or data.shape[0] < 4 * _HEADER_WORDS:
        raise ValueError(f"not a packed VIDEO array (dtype {data.dtype}, shape {list(data.shape)})")
    raw = data.tobytes()
    count, side = (int(w) for w in np.frombuffer(raw, "<u4", _HEADER_WORDS))
    start = 4 * (_HEADER_WORDS + count)
    if count < 1 or side < 1 or len(raw) < start:
        raise ValueError(f"not a packed VIDEO array (header says {count} frames of {side} px in {len(raw)} bytes)")
    ends = np.frombuffer(raw, "<u4", count, 4 * _HEADER_WORDS).astype(np.int64)
    if np.any(np.diff(ends, prepend=0) <= 0) or start + int(ends[-1]) != len(raw):
        raise ValueError("not a packed VIDEO array (frame offsets do not match its length)")
    bounds = [0, *ends.tolist()]
    return side, [raw[start + a : start + b] for a, b in zip(bounds[:-1], bounds[1:])]


def is_pixel_frames(array: np.ndarray) -> bool:
    """Whether a stored VIDEO array is the frames themselves (F x side x side x 3 uint8), not packed JPEGs."""
    data = np.asarray(array)
    return data.dtype == np.uint8 and data.ndim == 4 and data.shape[1] == data.shape[2] and data.shape[3] == 3


def frame_layout(array: np.ndarray) -> tuple[int, int]:
    """(frames, side) of a stored VIDEO array: pixel frames from their shape, packed JPEGs from the
    header alone."""
    data = np.asarray(array)
    if is_pixel_frames(data):
        return int(data.shape[0]), int(data.shape[1])
    if data.dtype != np.uint8 or data.ndim != 1 or data.shape[0] < 4 * _HEADER_WORDS:
        raise ValueError(f"not a stored VIDEO array (dtype {data.dtype}, shape {list(data.shape)})")
    count, side = (int(w) for w in np.frombuffer(data[: 4 * _HEADER_WORDS].tobytes(), "<u4"))
    return count, side


def decode_frames(array: np.ndarray) -> np.ndarray:
    """F x side x side x 3 uint8 pixels of a stored VIDEO array (pixel frames pass through)."""
    if is_pixel_frames(array):
        return np.asarray(array)
    side, jpegs = unpack_frames(array)
    out = np.empty((len(jpegs), side, side, 3), np.uint8)
    for i, jpeg in enumerate(jpegs):
        with PILImage.open(io.BytesIO(jpeg)) as img:
            out[i] = np.asarray(img.convert("RGB"))
    return out


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    """One H x W x 3 uint8 frame as JPEG with fixed settings (same pixels -> same bytes)."""
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False,
                                 progressive=False)
    return buf.getvalue()


# ----- decoding ----------------------------------------------------------------------------------

def sample_indices(total: int, frames: int) -> list[int]:
    """The centre frame of each of `frames` equal stretches of `total` frames (exact integers)."""
    return [(2 * i + 1) * total // (2 * frames) for i in range(frames)]


def _source(value: Any, base_dir: Path | None) -> Any:
    """What PyAV opens for a raw value (a path or a bytes stream), or RejectRow."""
    if is_missing(value):
        raise RejectRow("missing video")
    if isinstance(value, Mapping):  # HF datasets' {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
        if not value:
            raise RejectRow("missing video")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise RejectRow("missing video")
        return bytes(value)
    if isinstance(value, (str, Path)):
        return media_path(value, base_dir, "video").absolute()  # starts with "/": FFmpeg never reads a "proto:" prefix into it
    raise RejectRow(f"unsupported video value ({type(value).__name__})")


def _open(source: Any):
    """The opened container; RejectRow when FFmpeg finds no allowed demuxer for it (`DEMUXERS`)."""
    import av

    stream = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        return av.open(stream, container_options={"format_whitelist": DEMUXERS, "protocol_whitelist": "file"})
    except av.error.ArgumentError:  # what FFmpeg returns for a format off the whitelist
        raise RejectRow(f"not a video container this reads ({CONTAINERS_SHOWN})") from None


def _decoded(container):
    """The video stream and an iterator over its decoded frames (one decoding thread: the
    machine's cores belong to the materialisation workers)."""
    if not container.streams.video:
        raise RejectRow("file has no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return stream, container.decode(stream)


def read_video(value: Any, frames: int, side: int, base_dir: Path | None = None,
               min_frames: int = 0) -> tuple[list[np.ndarray], dict[str, Any]]:
    """`frames` evenly sampled RGB frames of `value` squashed to `side` x `side` (uint8), and the
    clip's meta; or RejectRow. Two passes: the first counts the decoded frames, the second keeps
    the sampled ones, so memory does not grow with the clip's length."""
    from av.video.reformatter import Interpolation

    source = _source(value, base_dir)
    try:
        with _open(source) as container:
            stream, decoded = _decoded(container)
            total = sum(1 for _ in decoded)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            duration = container.duration / 1e6 if container.duration else None
        if total == 0:
            raise RejectRow("video has no frames")
        if total < min_frames:
            raise RejectRow(f"video has {total} frames, fewer than min_length={min_frames}")
        wanted = sample_indices(total, frames)
        picked: dict[int, np.ndarray] = {}
        with _open(source) as container:
            _, decoded = _decoded(container)
            keep = set(wanted)
            for index, frame in enumerate(decoded):
                if index > wanted[-1]:
                    break
                if index in keep:
                    # FFmpeg's bit-exact C path, not its CPU-specific SIMD code: same pixels everywhere
                    rgb = frame.to_ndarray(format="rgb24", threads=1, interpolation=Interpolation.BICUBIC
                                           | Interpolation.BITEXACT | Interpolation.ACCURATE_RND)
                    img = PILImage.fromarray(rgb)
                    if img.size != (side, side):
                        img = img.resize((side, side), PILImage.Resampling.BICUBIC)
                    picked[index] = np.asarray(img, dtype=np.uint8)
    except RejectRow:
        raise
    except Exception as exc:  # FFmpeg reports bad data in many ways; keep the reason deterministic
        raise RejectRow(f"video could not be decoded ({type(exc).__name__})") from None
    if len(picked) != len(set(wanted)):  # the second pass decoded fewer frames than the first
        raise RejectRow("video could not be decoded (frame count changed between reads)")
    fps = float(rate) if rate else None
    if duration is None and fps:
        duration = total / fps
    meta = {"width": int(width), "height": int(height), "fps": None if fps is None else round(fps, 6),
            "duration": None if duration is None else round(duration, 6), "frames": total}
    return [picked[i] for i in wanted], meta


def slot_frames(attrs: Mapping[str, Any]) -> int:
    """F of a slot: its `max_length`, else `DEFAULT_FRAMES`."""
    return int(attrs.get("max_length") or DEFAULT_FRAMES)


def stored_shape(image_size: int, attrs: Mapping[str, Any]) -> list[int | None]:
    """The manifest's shape of a VIDEO slot's array: F x side x side x 3 pixels, or 1-D packed JPEGs."""
    return [None] if attrs.get(JPEG_FLAG) else [None, image_size, image_size, 3]


def _layout_name(shape: Any) -> str:
    if shape == [None]:
        return "JPEG frames"
    if isinstance(shape, list) and len(shape) == 4 and shape[-1] == 3:
        return f"uint8 pixel frames of {shape[1]} px"
    return f"arrays of shape {shape}"


class Video(Modality):
    name = "VIDEO"
    doc = ("mp4/webm/gif path or bytes -> F sampled frames (uint8, or JPEG with jpeg_frames) at the task's "
           "image_size; image stem + frame positions")
    dtype = "uint8"
    token_run = False
    media_files = True
    shrink_hint = "lower max_length= (frames) of the VIDEO slot or the task's image_size"
    attributes = {"VIDEO": frozenset({"max_length", "min_length", "preprocess", "adaptor", "disable_auto_boseos",
                                      JPEG_FLAG})}
    materialise_attrs = ("max_length", "min_length", JPEG_FLAG)
    preprocess = {"default": None, "video": None}
    """OFASys's `video` preprocessor (ofasys/preprocessor/default/video.py) samples frames and resizes
    them; its training-time jitter, crops and RandAugment are not done (frames are fixed at
    materialisation)."""
    adaptors = {"default": None, "video_image_sequence": None}
    """OFASys's `video_image_sequence` (ofasys/adaptor/video_image_sequence.py): an image trunk per
    frame plus frame positions, which is what `_adaptor_class` builds with any stem."""
    adaptor_config = VideoAdaptorConfig

    def shape(self, image_size: int) -> list[int | None]:
        return stored_shape(image_size, {})

    def stored_shape(self, image_size: int, attrs: Mapping[str, Any]) -> list[int | None]:
        return stored_shape(image_size, attrs)

    def layout_problem(self, entry: Mapping[str, Any], image_size: int) -> str | None:
        """Shards of the earlier layout (JPEGs without `jpeg_frames`) are recognised by the shape their
        manifest records, before any sample is read."""
        found, wanted = entry.get("shape"), stored_shape(image_size, entry.get("attrs") or {})
        if found == wanted:
            return None
        return f"the VIDEO shards store {_layout_name(found)}, this version stores {_layout_name(wanted)} for this slot"

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        frames, meta = read_video(value, slot_frames(attrs), ctx.image_size, ctx.base_dir,
                                  int(attrs.get("min_length") or 0))
        if attrs.get(JPEG_FLAG):
            return Materialised(pack_frames([jpeg_bytes(f) for f in frames], ctx.image_size), meta=meta)
        return Materialised(np.stack(frames), meta=meta)

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        frames, side = frame_layout(array)
        return frames * model.adaptor(self.name).grid_side(side) ** 2

    def collate(self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                rngs: Sequence[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """B x F x 3 x H x W uint8 (the adaptor turns it into floats on the device, see
        `unit_pixels`); no mask: every sample of a slot has the same F frames of the same size.
        Pixel frames are only stacked; with `jpeg_frames` each frame is JPEG-decoded here."""
        jpeg = bool(attrs.get(JPEG_FLAG))
        if any(is_pixel_frames(a) == jpeg for a in arrays):
            raise ValueError(f"VIDEO samples stored as {'pixel frames' if jpeg else 'JPEG frames'} but the slot "
                             f"{'has' if jpeg else 'has no'} {JPEG_FLAG}; re-run materialisation")
        layouts = {frame_layout(a) for a in arrays}
        if len(layouts) != 1:
            raise ValueError(f"VIDEO samples of one batch differ in (frames, side): {sorted(layouts)}; "
                             "the slot's shards were materialised with different settings")
        pixels = np.stack([decode_frames(a) for a in arrays])  # B x F x H x W x 3 uint8
        return np.ascontiguousarray(pixels.transpose(0, 1, 4, 2, 3)), None

    def build_adaptor(self, model: "ModelConfig") -> "nn.Module":
        return _adaptor_class()(model.adaptor(self.name), model.d_model)


def sinusoidal_1d(n: int, dim: int, device=None, dtype=None):
    """Fixed n x dim positions: sin and cos of the index at dim / 2 geometric frequencies."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device).float() / half)
    angles = torch.arange(n, device=device).float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


@functools.cache
def _adaptor_class():
    """The video adaptor's nn.Module class, defined on first use so that importing this file (the
    instruction parser does, when params load) does not import torch."""
    import torch
    import torch.nn as nn

    from ofasys.modalities.image import image_stem, sinusoidal_2d

    class VideoAdaptor(nn.Module):
        """B x F x 3 x H x W pixels (uint8, or floats in [0, 1]; see `unit_pixels`) (+ optional B x F
        frame mask) -> B x (F*h*w) x d_model, frame by frame, each frame's grid row-major, with 2-D
        grid and frame positions added."""

        def __init__(self, config: VideoAdaptorConfig, d_model: int):
            super().__init__()
            self.config, self.d_model = config, d_model
            if config.positions == "sinusoidal" and d_model % 4:
                raise ValueError("sinusoidal video positions need d_model divisible by 4")
            self.stem, channels = image_stem(config, d_model)
            self.proj = nn.Linear(channels, d_model)
            if config.positions == "learned":
                self.row_pos = nn.Embedding(config.max_grid, d_model)
                self.col_pos = nn.Embedding(config.max_grid, d_model)
                self.frame_pos = nn.Embedding(config.max_frames, d_model)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def positions(self, frames: int, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
            """F x (rows*cols) x d: grid position + frame position."""
            if self.config.positions == "sinusoidal":
                grid = sinusoidal_2d(rows, cols, self.d_model, device=device, dtype=dtype)
                time = sinusoidal_1d(frames, self.d_model, device=device, dtype=dtype)
            else:
                if max(rows, cols) > self.config.max_grid:
                    raise ValueError(f"video frame grid {rows}x{cols} exceeds max_grid={self.config.max_grid}; "
                                     "raise model.adaptors.VIDEO.max_grid or lower the task's image_size")
                if frames > self.config.max_frames:
                    raise ValueError(f"a clip of {frames} frames exceeds max_frames={self.config.max_frames}; "
                                     "raise model.adaptors.VIDEO.max_frames or lower max_length= of the VIDEO slot")
                r = self.row_pos(torch.arange(rows, device=device))
                c = self.col_pos(torch.arange(cols, device=device))
                grid = (r[:, None] + c[None]).reshape(rows * cols, -1)
                time = self.frame_pos(torch.arange(frames, device=device))
            return grid[None] + time[:, None]

        def forward(self, clips: torch.Tensor, mask: torch.Tensor | None = None):
            b, f = clips.shape[:2]
            dtype = self.proj.weight.dtype
            x = unit_pixels(clips.reshape(b * f, *clips.shape[2:])).to(dtype)
            x = (x - self.mean.to(dtype)) / self.std.to(dtype)
            x = self.stem(x)  # (B*F) x C x h x w
            _, _, h, w = x.shape
            x = self.proj(x.flatten(2).transpose(1, 2))  # (B*F) x (h*w) x d
            x = x.reshape(b, f, h * w, -1) + self.positions(f, h, w, x.dtype, x.device)[None]
            x = x.reshape(b, f * h * w, -1)
            if mask is None:
                return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            return x, mask.bool().repeat_interleave(h * w, dim=1)  # a frame's mask covers its grid

    return VideoAdaptor
