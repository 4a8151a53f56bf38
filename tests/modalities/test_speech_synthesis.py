"""Speech synthesis: raw Kaldi log-mel frames -> waveform (mel inversion + Griffin-Lim) -> WAV file.

The inversion is judged the way it is used: the frames of the waveform it makes, computed again by
`raw_fbank`, must be close to the frames it was given, far closer than those of white noise of the
same energy (which has the right level but nothing else).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ofasys.modalities.audio import raw_fbank
from ofasys.modalities.speech_synthesis import LOG_FLOOR, PEAK, waveform_from_fbank, write_wav

RATE = 16000
HARMONIC_MAE = 0.25
"""Log-mel mean absolute error bound on the harmonic signal: measured 0.10 (32 iterations), against
3.8 for white noise of the same energy."""
UTTERANCE_MAE = 0.4
"""The same bound on espeak-ng's "three seven one" (with digital silence at its end): measured 0.18,
against 12.9 for white noise."""
NOISE_RATIO = 10
"""The inversion's error is at least this many times below white noise's (measured: > 35 times)."""


def harmonic_signal(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like test signal: 30 harmonics falling as 1/k of a pitch gliding around 120 Hz,
    with a syllable-rate envelope and a faint noise floor (-48 dB), peak 0.5."""
    t = np.arange(int(RATE * seconds)) / RATE
    pitch = 120.0 + 25.0 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    envelope = 0.3 + 0.7 * np.sin(np.pi * 3 * t) ** 2
    wave = envelope * sum(np.sin(k * phase) / k for k in range(1, 31))
    wave = 0.5 * wave / np.abs(wave).max()
    wave += 0.002 * np.random.default_rng(seed).standard_normal(len(wave))
    return wave.astype(np.float32)


def white_noise_like(wave: np.ndarray, seed: int = 1) -> np.ndarray:
    return (wave.std() * np.random.default_rng(seed).standard_normal(len(wave))).astype(np.float32)


def resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    import torch
    import torchaudio

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    return torchaudio.functional.resample(wave, rate, RATE)[0].numpy()


def logmel_error(wave: np.ndarray, frames: np.ndarray) -> float:
    """Mean absolute difference between `raw_fbank(wave)` and `frames` (same number of frames)."""
    again = raw_fbank(wave, RATE)
    assert again.shape == frames.shape
    return float(np.abs(again - frames).mean())


@pytest.fixture(scope="module")
def harmonic() -> tuple[np.ndarray, np.ndarray]:
    """The harmonic signal and its raw log-mel frames."""
    wave = harmonic_signal()
    return wave, raw_fbank(wave, RATE)


@pytest.fixture(scope="module")
def harmonic_synthesis(harmonic) -> np.ndarray:
    return waveform_from_fbank(harmonic[1])


def test_inversion_reproduces_the_frames(harmonic, harmonic_synthesis):
    wave, frames = harmonic
    error = logmel_error(harmonic_synthesis, frames)
    noise_error = logmel_error(white_noise_like(wave), frames)
    assert error < HARMONIC_MAE
    assert error * NOISE_RATIO < noise_error


def test_inversion_of_a_real_utterance(utterance):
    samples, rate = utterance
    frames = raw_fbank(samples, rate)
    error = logmel_error(waveform_from_fbank(frames), frames)
    assert error < UTTERANCE_MAE
    assert error * NOISE_RATIO < logmel_error(white_noise_like(resampled(samples, rate)), frames)


def test_digital_silence_stays_silent(utterance):
    """Frames at Kaldi's floor (espeak-ng pads with zeros) come back as exact zeros, not as the
    smeared tail of the speech before them."""
    frames = raw_fbank(*utterance)
    silent = np.flatnonzero(frames.max(axis=1) <= LOG_FLOOR + 1e-3)
    assert len(silent) > 10
    wave = waveform_from_fbank(frames)
    assert np.all(wave[silent[0] * 160:] == 0.0)
    assert np.abs(wave[:silent[0] * 160]).max() > 0.1


def test_output_format_and_length(harmonic, harmonic_synthesis):
    wave, frames = harmonic
    assert harmonic_synthesis.dtype == np.float32 and harmonic_synthesis.ndim == 1
    assert len(harmonic_synthesis) == 400 + 160 * (len(frames) - 1)
    assert abs(len(harmonic_synthesis) - len(wave)) <= 160
    assert np.abs(harmonic_synthesis).max() <= 1.0


def test_level_is_kept_unless_it_would_clip(harmonic, harmonic_synthesis):
    """A quiet waveform keeps the level its frames encode; one that would clip is scaled to PEAK."""
    frames = harmonic[1]
    assert 0.2 < np.abs(harmonic_synthesis).max() < PEAK
    loud = waveform_from_fbank(frames + 2 * np.log(8.0))  # 8 x the amplitude: peaks ~5
    assert np.abs(loud).max() == pytest.approx(PEAK, abs=1e-6)


def test_deterministic(harmonic, harmonic_synthesis):
    assert np.array_equal(waveform_from_fbank(harmonic[1]), harmonic_synthesis)


def test_iterations_improve_the_fit(harmonic, harmonic_synthesis):
    frames = harmonic[1]
    assert logmel_error(harmonic_synthesis, frames) < logmel_error(waveform_from_fbank(frames, iterations=4), frames)


def test_empty_and_single_frame():
    empty = waveform_from_fbank(np.zeros((0, 80), dtype=np.float32))
    assert empty.shape == (0,) and empty.dtype == np.float32
    assert waveform_from_fbank(np.full((1, 80), 10.0)).shape == (400,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_frames_are_rejected(bad):
    frames = np.zeros((5, 80))
    frames[2, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        waveform_from_fbank(frames)


@pytest.mark.parametrize("shape", [(10,), (10, 40), (2, 10, 80)])
def test_wrong_shape_is_rejected(shape):
    with pytest.raises(ValueError, match="T x 80"):
        waveform_from_fbank(np.zeros(shape))


def test_wav_round_trip(tmp_path, harmonic_synthesis):
    path = write_wav(tmp_path / "out" / "speech.wav", harmonic_synthesis)
    assert path == tmp_path / "out" / "speech.wav"
    assert [p.name for p in path.parent.iterdir()] == ["speech.wav"]  # no temp file left behind
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (RATE, 1, "PCM_16", "WAV")
    samples, rate = sf.read(path, dtype="int16")
    assert rate == RATE and samples.dtype == np.int16 and len(samples) == len(harmonic_synthesis)
    assert np.array_equal(samples, np.round(harmonic_synthesis.astype(np.float64) * 32767).astype(np.int16))


def test_wav_bytes_are_deterministic_and_overwrite(tmp_path, harmonic_synthesis):
    first = write_wav(tmp_path / "a.wav", harmonic_synthesis).read_bytes()
    second = write_wav(tmp_path / "b.wav", harmonic_synthesis).read_bytes()
    assert first == second
    write_wav(tmp_path / "a.wav", np.zeros(10, dtype=np.float32), rate=8000)
    samples, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 8000 and np.array_equal(samples, np.zeros(10, dtype=np.int16))


def test_wav_clips_out_of_range_samples(tmp_path):
    path = write_wav(tmp_path / "clip.wav", np.array([1.5, -2.0, 0.5], dtype=np.float32))
    samples, _ = sf.read(path, dtype="int16")
    assert samples.tolist() == [32767, -32767, 16384]


@pytest.mark.parametrize("waveform, rate, match", [
    (np.array([0.0, np.nan]), RATE, "non-finite"),
    (np.zeros((2, 10)), RATE, "1-D"),
    (np.zeros(10), 0, "sample rate"),
])
def test_wav_rejects_bad_input_and_writes_nothing(tmp_path, waveform, rate, match):
    with pytest.raises(ValueError, match=match):
        write_wav(tmp_path / "bad.wav", waveform, rate=rate)
    assert list(tmp_path.iterdir()) == []
