"""IMAGE: path / bytes / PIL / array -> uint8 H x W x 3 at the task's square resolution.

Decoding and resizing happen once here (PIL bicubic, deterministic), so training reads raw pixels.
The original width and height go into the sample's meta: boxes are quantised and de-quantised
against them. The aspect ratio is not kept (a square squash), which keeps box bins exact: a bin is a
fraction of the original width or height, whatever the stored resolution.
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
            raise RejectRow("image file not found")
        try:
            with Image.open(path) as f:
                f.load()
                img = f.copy()
        except Exception as exc:
            raise RejectRow(f"image could not be decoded ({type(exc).__name__})") from None
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
                arr = np.rint(arr * 255.0).astype(np.uint8)
            else:
                raise RejectRow(f"image array must be uint8 or float in [0, 1] (got {arr.dtype})")
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise RejectRow(f"image array must be H x W or H x W x C (got shape {list(arr.shape)})")
        img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        raise RejectRow(f"unsupported image value ({type(value).__name__})")
    if img.width < 1 or img.height < 1:
        raise RejectRow("image has no pixels")
    return img


class ImageEncoder:
    modality = "IMAGE"
    dtype = "uint8"
    materialise_attrs = ("preprocess",)

    def shape(self, image_size: int) -> list[int | None]:
        return [image_size, image_size, 3]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        img = open_image(value, ctx.base_dir)
        width, height = img.width, img.height
        try:
            rgb = img.convert("RGB")
        except Exception as exc:
            raise RejectRow(f"image could not be converted to RGB ({type(exc).__name__})") from None
        size = ctx.image_size
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(rgb, dtype=np.uint8).copy()
        return Materialised(array, meta={"width": width, "height": height})

    def token_length(self, array: np.ndarray) -> int:
        return 0
