"""Fixtures for the modality tests: a tiny vocabulary and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ofasys.modalities import RowContext
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab

CORPUS = ["a photo of two digits", "what does the image describe?", "zero one two three four five"] * 10


@pytest.fixture(scope="session")
def vocab() -> UnifiedVocab:
    return UnifiedVocab.build(train_text_tokenizer(CORPUS, vocab_size=330), num_bins=16)


@pytest.fixture
def ctx(vocab) -> RowContext:
    return RowContext(vocab=vocab, image_size=32)


@pytest.fixture
def png():
    def make(width: int, height: int, seed: int = 0, fmt: str = "PNG") -> bytes:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        return buf.getvalue()

    return make
