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

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from PIL import Image as PILImage

from ofasys.modalities.base import (
    IMAGE_CODE_GRID,
    NO_ASSETS,
    Materialised,
    Modality,
    OutputStep,
    RejectRow,
    RowContext,
    is_missing,
    media_path,
)
from ofasys.vocab import UnifiedVocab

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    import torch.nn as nn

    from ofasys.model.config import ModelConfig


def open_image(value: Any, base_dir: Path | None = None) -> PILImage.Image:
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
    if isinstance(value, PILImage.Image):
        img = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise RejectRow("missing image")
        try:
            img = PILImage.open(io.BytesIO(bytes(value)))
            img.load()
        except Exception as exc:  # PIL raises many types for bad data; the reason must stay deterministic
            raise RejectRow(f"image could not be decoded ({type(exc).__name__})") from None
    elif isinstance(value, (str, Path)):
        path = media_path(value, base_dir, "image")
        try:
            with PILImage.open(path) as f:
                f.load()
                img = f.copy()
        except Exception as exc:
            raise RejectRow(f"image could not be decoded ({type(exc).__name__})") from None
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise RejectRow(f"image array must be H x W or H x W x C with C in 1, 3, 4 (got shape {list(arr.shape)})")
        arr = to_uint8(arr, "image array")
        img = PILImage.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
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


def to_rgb(img: PILImage.Image) -> PILImage.Image:
    """An 8-bit RGB copy of `img`, deep pixels scaled by their bit depth (see module doc), or RejectRow."""
    mode = img.mode
    if mode in _DEEP_MODES:
        grey = to_uint8(np.asarray(img), f"{mode} image", _DEEP_MODES[mode])
        return PILImage.fromarray(grey).convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise RejectRow(f"image could not be converted to RGB ({type(exc).__name__}, mode {mode})") from None


def square_rgb(img: PILImage.Image, size: int) -> np.ndarray:
    """`img` as uint8 size x size x 3: 8-bit RGB (see `to_rgb`), squashed square by a bicubic resize.
    The one resize every image goes through, pixels (`Image`) and VQ codes (`ImageCodes`) alike."""
    rgb = to_rgb(img)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), PILImage.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


VQ_KIND = "IMAGE+image_vqgan"
"""Kind of an IMAGE slot with preprocess=image_vqgan (VQ code tokens, not pixels)."""
IMAGE_STEMS = ("conv", "patch", "resnet50", "resnet101", "resnet152")
IMAGE_POSITIONS = ("learned", "sinusoidal")
_STEM_OF_ADAPTOR = {"image_resnet": ("resnet50", "resnet101", "resnet152"), "image_patch_embed": ("patch",)}
"""OFASys's image adaptor names -> the stems of ours that are that adaptor."""


@dataclass(frozen=True)
class ImageAdaptorConfig:
    """`model.adaptors.IMAGE`: how pixels become encoder tokens."""

    stem: str = "conv"
    """"conv": a stride-8 3x3-conv stack with BatchNorm (see `conv_stem`; 64 px -> 8x8 = 64 tokens,
    what the CPU demo is calibrated for); "patch": a ViT-style patch embedding (one linear map per
    `patch_size` square, OFASys's `image_patch_embed`); "resnet50" / "resnet101" / "resnet152": OFA's
    torchvision ResNet trunk up to layer3 (stride 16, 1024 channels, untrained; OFASys's `image_resnet`)."""
    stem_channels: int = 128
    """Output channels of the "conv" stem (its inner layers use 1/4 and 1/2 of it); ignored by the
    other stems."""
    patch_size: int = 16
    """Side of one patch of the "patch" stem, in pixels."""
    positions: str = "learned"
    """2-D positions added to image tokens: "learned" (row + column tables) or "sinusoidal" (fixed
    sin/cos of row and column, works for any grid size)."""
    max_grid: int = 32
    """Largest grid side (tokens per row/column) the learned 2-D position tables cover."""

    def __post_init__(self) -> None:
        if self.stem not in IMAGE_STEMS:
            raise ValueError(f"stem={self.stem!r}; expected one of {IMAGE_STEMS}")
        if self.positions not in IMAGE_POSITIONS:
            raise ValueError(f"positions={self.positions!r}; expected one of {IMAGE_POSITIONS}")
        for name in ("stem_channels", "patch_size", "max_grid"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def grid_side(self, image_size: int) -> int:
        """Tokens per row (and column) the stem makes from a square `image_size` px image.

        Every stride-2 layer of the stems (3x3 convs with padding 1; the ResNet's 7x7 conv1 with
        padding 3 and its 3x3 max-pool) maps a side of n pixels to ceil(n / 2): three of them in the
        "conv" stem (stride 8), four in the ResNet trunks (stride 16); the "patch" stem cuts
        floor(n / patch_size) whole patches. Materialisation counts these against `max_positions`,
        so this must match the adaptor exactly, also for sizes that are not a multiple of the stride."""
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if self.stem == "patch":
            return image_size // self.patch_size
        side = image_size
        for _ in range(3 if self.stem == "conv" else 4):
            side = -(-side // 2)
        return side


class Image(Modality):
    name = "IMAGE"
    doc = "path / bytes / PIL / array -> uint8 H x W x 3 at the task's image_size; conv, patch or ResNet stem"
    dtype = "uint8"
    token_run = False
    attributes = {
        "IMAGE": frozenset({"mask_ratio", "preprocess", "adaptor", "disable_auto_boseos"}),
        VQ_KIND: frozenset({
            "no_loss", "mask_ratio", "preprocess", "adaptor", "add_bos", "add_eos", "disable_auto_boseos", "length",
        }),
    }
    media_files = True
    pictures = True
    shrink_hint = "lower the task's image_size"
    preprocess = {
        "default": None,
        "image": None,
        "imagenet": "not supported yet: its per-epoch RandAugment and random-erasing training augmentation "
                    "is not implemented (images are resized once, at materialisation)",
        "imagepretrain": "not supported yet: its per-epoch random resize, crop and RandAugment training "
                         "augmentation is not implemented (images are resized once, at materialisation)",
        "image_vqgan": None,
    }
    """OFASys's IMAGE preprocessors (ofasys/preprocessor/default/image.py, image_code.py): `image`, the
    square bicubic resize, is what materialisation does; `image_vqgan` turns the image into the codes
    of the run's VQ tokenizer (`ImageCodes`); the augmenting ones are refused at params load."""
    adaptors = {
        "default": None,
        "image_resnet": None,
        "image_patch_embed": None,
        "image_vit": "not supported yet: there is no ViT image adaptor",
        "image_vqgan": None,
    }
    """OFASys's IMAGE adaptors (ofasys/adaptor/image_*.py): `image_resnet` and `image_patch_embed` are
    stems of ours (`_STEM_OF_ADAPTOR`; which one a model builds is `model.adaptors.IMAGE.stem`);
    `image_vqgan` is the shared token embedding of the code block (the parser pairs it with
    `preprocess=image_vqgan`)."""
    adaptor_config = ImageAdaptorConfig
    default_adaptor = True
    legacy_model_keys = {"image_stem": "stem", "image_stem_channels": "stem_channels",
                         "image_positions": "positions", "max_image_grid": "max_grid"}

    def kinds(self, preprocess: str | None) -> frozenset[str]:
        return frozenset({self.name, VQ_KIND}) if preprocess == "image_vqgan" else frozenset({self.name})

    def variant(self, preprocess: str | None) -> Modality:
        return IMAGE_CODES if preprocess == "image_vqgan" else self

    def adaptor_fits(self, adaptor: str, config: ImageAdaptorConfig) -> str | None:
        """None when the slot's `adaptor=` names the configured stem, else the fix."""
        stems = _STEM_OF_ADAPTOR.get(adaptor)
        if stems is None or config.stem in stems:
            return None
        return f"adaptor={adaptor} needs model.adaptors.IMAGE.stem in {list(stems)} (it is {config.stem!r})"

    def shape(self, image_size: int) -> list[int | None]:
        return [image_size, image_size, 3]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        img = open_image(value, ctx.base_dir)
        array = square_rgb(img, ctx.image_size)
        return Materialised(array, meta={"width": img.width, "height": img.height})

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        side = model.adaptor("IMAGE").grid_side(int(array.shape[0]))
        return side * side

    def collate(self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                rngs: Sequence[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """B x 3 x H x W uint8, the stored pixels channel-first. They stay 8-bit through the loader's
        shared memory and the host-to-device copy (a quarter of float32's bytes); the adaptor turns
        them into floats on the device (`unit_pixels`)."""
        imgs = np.stack([np.asarray(a) for a in arrays])  # B x H x W x 3 uint8
        return np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)), None

    def build_adaptor(self, model: "ModelConfig") -> "nn.Module":
        return _adaptor_class()(model.adaptor("IMAGE"), model.d_model)


class ImageCodes(Modality):
    """An IMAGE slot with `preprocess=image_vqgan`: the image as `grid * grid` VQ code tokens.

    The run's VQ tokenizer (`ofasys.vq`, trained by the `vq` stage or given as a file) encodes the
    image, resized to its own image_size, once at materialisation; the codes are stored as unified
    ids of the vocabulary's code block (int32 like every token run: a code id lies past the BPE and
    the bins, beyond int16 for a large BPE), so they embed, mask and train like any other tokens.
    Generation emits exactly `grid * grid` code ids; `decode_output` returns the code indices, which
    the VQ decoder turns into pixels (`ofasys.vq.VQTokenizer.decode`). The reference kept for
    evaluation is the code indices too.
    """

    name = "IMAGE"
    member_tag = "image_codes"
    doc = "preprocess=image_vqgan: the image as grid x grid VQ code tokens of the run's VQ tokenizer; generated"
    dtype = "int32"
    token_run = True
    media_files = True
    pictures = True
    vocab_block = "codes"
    output_field = "image"

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        tokenizer = ctx.image_codes
        if tokenizer is None:
            raise RuntimeError("an IMAGE slot with preprocess=image_vqgan needs the VQ tokenizer (assets/vq); "
                               "none was given to materialisation")
        if ctx.vocab.num_codes != tokenizer.config.codebook_size:
            raise RuntimeError(f"the vocabulary has {ctx.vocab.num_codes} code ids but the VQ tokenizer "
                               f"{tokenizer.config.codebook_size} codes; set assets.num_codes to match")
        img = open_image(value, ctx.base_dir)
        pixels = square_rgb(img, tokenizer.config.image_size)
        codes = tokenizer.encode(pixels[None])[0].reshape(-1).astype(np.int64)
        ids = (codes + ctx.vocab.code_range.start).astype(np.int32)
        return Materialised(ids, meta={"width": img.width, "height": img.height}, ref=[int(c) for c in codes])

    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        """Exactly grid * grid ids of the code block (the grid is the VQ tokenizer's)."""
        grid = assets.get(IMAGE_CODE_GRID)
        if not grid:
            raise ValueError(f"generating the image codes of '{column}' needs the VQ tokenizer's grid, which the "
                             "task's manifest records (image_codes); re-materialise the task with this version")
        if not vocab.num_codes:
            raise ValueError(f"generating the image codes of '{column}' needs code ids in the vocabulary; "
                             "set assets.num_codes to the VQ codebook size")
        return OutputStep("fixed", column, self.name, allowed=vocab.code_range, length=int(grid) ** 2)

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        """The generated code indices, row-major (fewer than grid * grid when generation was cut)."""
        start = vocab.code_range.start
        return [int(t) - start for t in ids]


IMAGE_CODES = ImageCodes()
"""The handler of IMAGE slots with `preprocess=image_vqgan` (`Image.variant`)."""


# Pixels are normalised by ImageNet statistics (after `unit_pixels`): what ResNet-style stems expect,
# and harmless for the small conv stem.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_pixels(pixels: "torch.Tensor") -> "torch.Tensor":
    """Pixels as float32 in [0, 1]: uint8 (what IMAGE and VIDEO collate) divided by 255 on their own
    device; a floating tensor is taken to be in [0, 1] already and returned as it is.

    Each value is x / 255 correctly rounded, bit for bit what numpy's float32 division gives, on any
    device: the divisor is a tensor on the pixels' device, not a Python number, because CUDA divides
    by a host scalar as a multiplication by its reciprocal, which is one ulp off for some x."""
    import torch

    if pixels.dtype == torch.uint8:
        return pixels.float().div_(torch.full((), 255.0, dtype=torch.float32, device=pixels.device))
    if pixels.is_floating_point():
        return pixels
    raise TypeError(f"pixels must be uint8 (0..255) or floating point (0..1), got {pixels.dtype}")


def conv_stem(out_channels: int) -> "nn.Sequential":
    """Three stride-2 3x3 convs, then one stride-1 3x3 conv, each with BatchNorm and ReLU.

    Stride 8, so a 64 px image gives 8x8 = 64 tokens. The last, stride-1 conv doubles the receptive
    field (15 -> 31 px) so one token can see a whole 24-32 px digit: with it, captioning reached the
    same teacher-forced accuracy in half the steps (.97 at 200 vs 400 steps, single-task runs here),
    for about one more conv at the coarsest resolution. BatchNorm is there on purpose: without it
    the tiny CPU model did not learn captioning or grounding in the calibration runs (SETUP.md).
    """
    import torch.nn as nn

    c1, c2 = max(out_channels // 4, 8), max(out_channels // 2, 8)
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, c1, 2), (c1, c2, 2), (c2, out_channels, 2), (out_channels, out_channels, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def resnet_stem(name: str) -> tuple["nn.Sequential", int]:
    """OFA's image trunk: a torchvision ResNet up to layer3 (stride 16, 1024 channels), untrained.

    No pretrained weights ship offline (SETUP.md), so the trunk is randomly initialised; its value
    is architectural parity with OFA at the large sizes.
    """
    import torch.nn as nn
    import torchvision  # imported lazily: the tiny CPU model does not need it

    net = getattr(torchvision.models, name)(weights=None)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    return trunk, net.layer3[-1].conv3.out_channels


def image_stem(config: ImageAdaptorConfig, d_model: int) -> tuple["nn.Module", int]:
    """The stem `config.stem` names and its output channels (IMAGE, and VIDEO per frame)."""
    import torch.nn as nn

    if config.stem == "conv":
        return conv_stem(config.stem_channels), config.stem_channels
    if config.stem == "patch":
        return nn.Conv2d(3, d_model, config.patch_size, stride=config.patch_size), d_model
    return resnet_stem(config.stem)


def sinusoidal_2d(rows: int, cols: int, dim: int, device=None, dtype=None):
    """Fixed (rows*cols) x dim positions: first half encodes the row, second half the column."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, half, 2, device=device).float() / half)

    def encode(n: int) -> torch.Tensor:
        angles = torch.arange(n, device=device).float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # n x half

    r, c = encode(rows), encode(cols)
    pos = torch.cat([r[:, None].expand(rows, cols, half), c[None].expand(rows, cols, half)], dim=-1)
    return pos.reshape(rows * cols, dim).to(dtype)


@functools.cache
def _adaptor_class():
    """The image adaptor's nn.Module class, defined on first use so that importing this file (the
    instruction parser does, when params load) does not import torch."""
    import torch
    import torch.nn as nn

    class ImageAdaptor(nn.Module):
        """B x 3 x H x W pixels (uint8, or floats in [0, 1]; see `unit_pixels`) -> B x (h*w) x d_model,
        row-major grid, 2-D positions added.

        2-D positions are added here (not by the encoder) because only the adaptor knows the grid."""

        def __init__(self, config: ImageAdaptorConfig, d_model: int):
            super().__init__()
            self.config, self.d_model = config, d_model
            if config.positions == "sinusoidal" and d_model % 4:
                raise ValueError("sinusoidal 2-D image positions need d_model divisible by 4")
            self.stem, channels = image_stem(config, d_model)
            self.proj = nn.Linear(channels, d_model)
            if config.positions == "learned":
                self.row_pos = nn.Embedding(config.max_grid, d_model)
                self.col_pos = nn.Embedding(config.max_grid, d_model)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def positions(self, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
            if self.config.positions == "sinusoidal":
                return sinusoidal_2d(rows, cols, self.d_model, device=device, dtype=dtype)
            if max(rows, cols) > self.config.max_grid:
                raise ValueError(f"image grid {rows}x{cols} exceeds max_grid={self.config.max_grid}; "
                                 "raise model.adaptors.IMAGE.max_grid or use smaller images")
            r = self.row_pos(torch.arange(rows, device=device))
            c = self.col_pos(torch.arange(cols, device=device))
            return (r[:, None] + c[None]).reshape(rows * cols, -1)

        def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
            dtype = self.proj.weight.dtype
            x = (unit_pixels(images).to(dtype) - self.mean.to(dtype)) / self.std.to(dtype)
            x = self.stem(x)  # B x C x h x w
            b, _, h, w = x.shape
            x = self.proj(x.flatten(2).transpose(1, 2))  # B x (h*w) x d
            x = x + self.positions(h, w, x.dtype, x.device)[None]
            return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)

    return ImageAdaptor

