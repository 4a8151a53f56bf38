"""A small trained VQ image tokenizer for tests that need real codes (trained in a few seconds)."""

from __future__ import annotations

import functools

import numpy as np

TINY_VQ = dict(image_size=16, grid=4, codebook_size=16, code_dim=8, channels=8, steps=30, batch_size=16, seed=3)
"""Shape and recipe of the test tokenizer (grid 4: an image is 16 codes)."""


def blocky_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """n images of a few flat colour blocks: enough structure for codes to mean something."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n, 2, 2, 3))
    return np.kron(colours, np.ones((size // 2, size // 2, 1))).astype(np.uint8)


@functools.cache
def tiny_tokenizer():
    from ofasys.vq import VQConfig, train_vq

    return train_vq(blocky_images(64), VQConfig(**TINY_VQ))


def save_tiny(path) -> str:
    """Write the test tokenizer to `path`; its fingerprint."""
    from ofasys.vq import save_vq

    return save_vq(tiny_tokenizer(), path)
