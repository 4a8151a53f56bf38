"""The VQ image tokenizer's config and file header, without torch.

Params validation reads these when `params.yaml` loads (the grid a slot's `length=` must match, the
codebook size `assets.num_codes` must equal, a user's VQ file's own config), and that must stay fast:
`ofasys.vq`, which holds the model, imports torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

VQ_FORMAT = 1


class VQError(ValueError):
    """A VQ file that is not one, or does not match what reads it."""


@dataclass(frozen=True)
class VQConfig:
    """The VQ tokenizer's shape and training recipe (`assets.vq` in params)."""

    image_size: int = 32
    """Side of the square RGB images it encodes, in pixels; images are resized to it first."""
    grid: int = 8
    """Codes per side: an image is `grid * grid` tokens. image_size / grid must be a power of two."""
    codebook_size: int = 256
    """Distinct codes, the size of the vocabulary's code block (`assets.num_codes`)."""
    code_dim: int = 32
    """Width of a code vector."""
    channels: int = 64
    """Width of the conv encoder and decoder."""
    steps: int = 1500
    """Training updates."""
    batch_size: int = 64
    lr: float = 2e-3
    commitment: float = 0.25
    """Weight of the loss pulling encoder outputs toward their codes."""
    ema_decay: float = 0.99
    """Codebook moving-average decay."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "grid", "codebook_size", "code_dim", "channels", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        ratio = self.image_size // self.grid
        if self.image_size % self.grid or ratio < 2 or ratio & (ratio - 1):
            raise ValueError(f"image_size / grid must be a power of two >= 2, got {self.image_size} / {self.grid}; "
                             f"e.g. image_size {self.grid * 4} for grid {self.grid}")
        if not 0 < self.lr < 1 or not 0 <= self.commitment or not 0 < self.ema_decay < 1:
            raise ValueError(f"lr must be in (0, 1), commitment >= 0, ema_decay in (0, 1); got "
                             f"{self.lr}, {self.commitment}, {self.ema_decay}")

    @property
    def downsamplings(self) -> int:
        return int(math.log2(self.image_size // self.grid))


def read_vq_header(path: str | os.PathLike) -> tuple[VQConfig, str]:
    """(config, recorded fingerprint) of a VQ file, from its safetensors header alone (no tensors
    read, no torch). `ofasys.vq.load_vq` verifies the tensors against the fingerprint."""
    path = Path(path)
    if not path.is_file():
        raise VQError(f"{path}: no VQ tokenizer file there")
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 0 < n <= 100_000_000:
                raise ValueError("implausible header length")
            header = json.loads(fh.read(n))
        meta = header.get("__metadata__") or {}
        if meta.get("format") != str(VQ_FORMAT):
            raise ValueError(f"metadata format {meta.get('format')!r}")
        config = VQConfig(**json.loads(meta["config"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VQError(f"{path}: not a VQ tokenizer file of format {VQ_FORMAT} ({err})") from None
    return config, str(meta.get("fingerprint", ""))
