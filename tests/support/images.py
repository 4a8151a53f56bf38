"""Real, deterministic PNG bytes for tests that need image cells."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def random_png(seed: int, size: int = 16) -> bytes:
    """A size x size RGB PNG of seeded noise."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
