"""Shared fixtures for the data-layer tests: a tiny vocabulary, PNG bytes and parquet splits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab

WORDS = "zero one two three four five six seven eight nine".split()
CORPUS = [
    "what does the image describe?",
    "which region does the text describe?",
    "what is the complete text of",
    "how many digits are there?",
    *[f"{a} {b} {c}" for a in WORDS for b in WORDS[:4] for c in WORDS[:3]],
]


@pytest.fixture(scope="session")
def vocab_path(tmp_path_factory) -> Path:
    tok = train_text_tokenizer(CORPUS, vocab_size=420)
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    UnifiedVocab.build(tok, num_bins=16).save(path)
    return path


@pytest.fixture(scope="session")
def vocab(vocab_path) -> UnifiedVocab:
    return UnifiedVocab.load(vocab_path)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path: Path, columns: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.fixture
def png():
    """png(width, height, seed=0) -> PNG bytes of random pixels."""
    return png_bytes


@pytest.fixture
def parquet():
    """parquet(path, {column: values}) -> str path of the written parquet file."""
    return write_parquet
