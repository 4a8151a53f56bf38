"""IMAGE: path / bytes / PIL / array -> uint8 H x W x 3 at the task's square resolution.

Decoding and resizing happen once here (PIL bicubic, deterministic), so training reads raw pixels.
The original width and height go into the sample's meta: boxes are quantised and de-quantised
against them. The aspect ratio is not kept (a square squash), which keeps box bins exact: a bin is a
fraction of the original width or height, whatever the stored resolution.

Pixels deeper than 8 bits are scaled to 8 bits by the value range of their bit depth (x / 257 for
16-bit), never clipped: PIL's own `convert("RGB")` of a 16-bit image ("I;16", "I") saturates almost
every pixel to 255. Float pixels ("F" images, float arrays) must lie in [0, 1]. Alpha is dropped (the
colour under it is kept), palettes are expanded. A value that can't be converted is rejected with a
reason, never stored wrong.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from ofasys.modalities.base import Materialised, RejectRow, RowContext, is_missing


def open_image(value: Any, base_dir: Path | None = None) -> Image.Image:
    """Decode any supported raw image value to a loaded PIL image, or raise RejectRow."""
    if is_missing(value):
        raise RejectRow("missing image")
    if isinstance(value, Mapping):  # HF datasets' Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise RejectRow("missing image")
    if isinstance(value, Image.Image):
        img = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise RejectRow("missing image")
        try:
            img = Image.open(io.BytesIO(bytes(value)))
            img.load()
        except Exception as exc:  # PIL raises many types for bad data; the reason must stay deterministic
            raise RejectRow(f"image could not be decoded ({type(exc).__name__})") from None
    elif isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            # the path as written in the data (not the resolved one): reasons stay machine-independent
            shown = str(value) if len(str(value)) <= 200 else str(value)[:200] + "..."
            raise RejectRow(f"image file not found ({shown})")
        try:
            with Image.open(path) as f:
                f.load()
                img = f.copy()
        except Exception as exc:
            raise RejectRow(f"image could not be decoded ({type(exc).__name__})") from None
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise RejectRow(f"image array must be H x W or H x W x C with C in 1, 3, 4 (got shape {list(arr.shape)})")
        arr = to_uint8(arr, "image array")
        img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        raise RejectRow(f"unsupported image value ({type(value).__name__})")
    if img.width < 1 or img.height < 1:
        raise RejectRow("image has no pixels")
    return img


_UNSIGNED_RANGE = {np.dtype(np.uint16): 65535.0, np.dtype(np.uint32): 4294967295.0}
"""Unsigned integer pixel types deeper than 8 bits and the value of their full scale."""


def to_uint8(arr: np.ndarray, what: str, full_scale: float | None = None) -> np.ndarray:
    """Pixels as uint8, scaled by the value range of their bit depth: x * 255 / full_scale, rounded
    (x / 257 for 16-bit). uint8 passes through; floats must be finite and in [0, 1]; `full_scale`
    overrides the dtype's (PIL's "I" mode holds 32-bit signed ints); anything else is a RejectRow."""
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        raise RejectRow(f"{what} has no pixels")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise RejectRow(f"{what} is float but not in [0, 1]; scale it to [0, 1] or to uint8 first")
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    scale = full_scale if full_scale is not None else _UNSIGNED_RANGE.get(arr.dtype.newbyteorder("="))
    if scale is None or not np.issubdtype(arr.dtype, np.integer):
        raise RejectRow(f"{what} must be uint8, uint16, uint32 or float in [0, 1] (got {arr.dtype.newbyteorder('=')})")
    if arr.min() < 0 or arr.max() > scale:
        raise RejectRow(f"{what} has pixel values outside 0..{int(scale)}; convert it to 8 bits first")
    return np.rint(arr.astype(np.float64) * (255.0 / scale)).astype(np.uint8)


_DEEP_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 2147483647.0, "F": None}
"""PIL's single-channel modes deeper than 8 bits and their full scale: 16-bit unsigned, "I" 32-bit
signed integers (negative values can't be mapped and are rejected), "F" 32-bit floats in [0, 1]."""


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `img`, deep pixels scaled by their bit depth (see module doc), or RejectRow."""
    mode = img.mode
    if mode in _DEEP_MODES:
        grey = to_uint8(np.asarray(img), f"{mode} image", _DEEP_MODES[mode])
        return Image.fromarray(grey).convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise RejectRow(f"image could not be converted to RGB ({type(exc).__name__}, mode {mode})") from None


class ImageEncoder:
    modality = "IMAGE"
    dtype = "uint8"
    materialise_attrs = ("preprocess",)

    def shape(self, image_size: int) -> list[int | None]:
        return [image_size, image_size, 3]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        img = open_image(value, ctx.base_dir)
        width, height = img.width, img.height
        rgb = to_rgb(img)
        size = ctx.image_size
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(rgb, dtype=np.uint8).copy()
        return Materialised(array, meta={"width": width, "height": height})

    def token_length(self, array: np.ndarray) -> int:
        return 0
