"""Fixtures for the modality tests: a tiny vocabulary (with and without a phone block), PNG bytes,
and real utterances (espeak-ng) with helpers that write them as audio files."""

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


# ----- AUDIO and PHONE --------------------------------------------------------------------------

def _espeak(text: str) -> tuple[np.ndarray, int]:
    """A real utterance: espeak-ng's WAV of `text` as float32 mono samples and its sample rate."""
    import subprocess

    import soundfile as sf

    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return samples, int(rate)


@pytest.fixture(scope="session")
def utterance() -> tuple[np.ndarray, int]:
    """"three seven one", spoken by espeak-ng (22.05 kHz mono float32)."""
    return _espeak("three seven one")


@pytest.fixture(scope="session")
def other_utterance() -> tuple[np.ndarray, int]:
    """A different utterance by the same voice, of about the same length, sharing two words."""
    return _espeak("three seven two")


@pytest.fixture(scope="session")
def resample():
    """`resample(samples, rate, new_rate)`: the utterance at another sample rate (a Kaiser-windowed
    sinc, not the Hann default materialisation resamples with, so the inputs are made independently)."""
    import torch
    import torchaudio

    def make(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
        if new_rate == rate:
            return samples
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        out = torchaudio.functional.resample(wave, rate, new_rate, resampling_method="sinc_interp_kaiser")
        return out[0].numpy()

    return make


@pytest.fixture(scope="session")
def encode_audio():
    """`encode_audio(samples, rate, fmt, subtype=None)` -> the bytes of an audio file soundfile writes."""
    import soundfile as sf

    def make(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, samples, rate, format=fmt, subtype=subtype)
        return buf.getvalue()

    return make


PHONE_TRAIN_TEXTS = ["three seven", "one two", "nine four"]


@pytest.fixture(scope="session")
def phone_vocab() -> UnifiedVocab:
    """The tiny vocabulary with a phone block: the phones espeak-ng gives PHONE_TRAIN_TEXTS (sorted,
    as the assets stage collects them)."""
    from ofasys.modalities.phone import Phone

    phones = sorted(Phone().vocab_tokens(PHONE_TRAIN_TEXTS, {"preprocess": "text_phone"}))
    return UnifiedVocab.build(train_text_tokenizer(CORPUS, vocab_size=330), num_bins=16, phones=phones)


@pytest.fixture
def phone_ctx(phone_vocab) -> RowContext:
    return RowContext(vocab=phone_vocab, image_size=32)
