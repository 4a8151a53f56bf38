"""Speech synthesis: raw Kaldi log-mel frames (what text-to-speech generates) -> a waveform to listen to.

A text-to-speech model generates T x 80 raw (not normalised) log-mel frames, the features
`ofasys.modalities.audio.raw_fbank` computes: Kaldi fbank at 16 kHz, 25 ms povey windows every 10 ms,
pre-emphasis 0.97, 512-point power spectrum, 80 mel bins from 20 Hz to 8 kHz, natural log, on samples
scaled to 16-bit values. There is no neural vocoder here; the frames are inverted step by step, each
step undoing one of Kaldi's:

1. mel -> power spectrum: the non-negative power spectrum whose Kaldi mel energies are closest to
   the frame's (a non-negative least-squares fit, by multiplicative updates);
2. power -> magnitude (square root), 16-bit scale -> [-1, 1] scale;
3. magnitude -> pre-emphasised waveform: Griffin-Lim phase recovery with Kaldi's window, frame and
   hop, zero initial phase (so the output is deterministic);
4. undo the pre-emphasis (a first-order IIR), zero the samples of silent frames (see
   `SILENCE_LOG`), and lower the level only if it would clip.

Griffin-Lim's phase is not the original's, so the result sounds rougher than a recording: enough to
listen to a generated utterance, not a vocoder's quality. Its log-mel frames match the input's
closely (the tests bound how closely). torch and torchaudio are imported inside the functions, so that importing this
file stays cheap.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np

from ofasys.modalities.audio import FRAME_LENGTH_MS, FRAME_SHIFT_MS, NUM_MEL_BINS, SAMPLE_RATE

FFT_SIZE = 512
"""Kaldi pads each 400-sample frame to the next power of two before the FFT."""
WIN_LENGTH = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)
"""Samples per frame (400 at 16 kHz)."""
HOP_LENGTH = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)
"""Samples between frames (160 at 16 kHz)."""
KALDI_SCALE = 32768.0
"""`raw_fbank` computes features on samples times this (16-bit values); magnitudes are divided by it."""
PREEMPHASIS = 0.97
"""Kaldi's default pre-emphasis coefficient, undone after phase recovery."""
POVEY_EXPONENT = 0.85
"""Kaldi's default window is a Hann window to this power; phase recovery uses the same window, so
the magnitudes it enforces are those of the analysis that produced the frames."""
LOW_FREQ, HIGH_FREQ = 20.0, 0.0
"""Kaldi's mel range: 20 Hz up to Nyquist (a high frequency <= 0 is an offset from Nyquist)."""
LOG_FLOOR = float(np.log(np.finfo(np.float32).eps))
"""Kaldi's log floor (log of float32 epsilon, ~ -15.9): the lowest value `raw_fbank` gives."""
LOG_CEILING = 50.0
"""Generated frames are clipped to this before `exp`: a full-scale 16-bit tone reaches ~32, so real
frames are never touched, while a wild generated value cannot overflow to inf."""
NNLS_ITERATIONS = 30
"""Multiplicative updates of the mel -> power fit: its log-mel error is ~0.01-0.02 after 30 (~0.2 for
the spread-out start alone), below Griffin-Lim's, at a few ms per second of speech."""
EDGE_FRAMES = 2
"""Frames repeated at each end before phase recovery: Griffin-Lim's frames are centred on multiples
of the hop and reflect-padded at the ends, Kaldi's are not (its first frame starts at sample 0), so
the output is cut from a slightly longer synthesis in which every Kaldi frame lies wholly inside."""
SILENCE_LOG = -10.0
"""A frame whose every bin is below this is digital silence, and its samples are set to zero: Griffin-
Lim smears the neighbouring frames' energy, and the de-emphasis filter its tail, into a silent stretch,
which costs nothing audible but ~16 in log-mel at its edges (the floor is ~ -15.9). -10 is far below
anything a 16-bit file holds (its quantisation noise is ~ +2 per bin), yet above the floor by enough
that generated silence, a few units off, still counts."""
PEAK = 0.95
"""Peak level a waveform that would clip is scaled down to (quieter ones are left as they are, so
the levels the frames encode are kept)."""


@functools.lru_cache(maxsize=1)
def kaldi_mel_banks() -> np.ndarray:
    """80 x 257 float64 Kaldi mel filters over the power spectrum's bins (read-only).

    torchaudio's `get_mel_banks` omits the Nyquist bin (Kaldi's filters are zero there); a zero column
    is appended so that the matrix maps a full one-sided 512-point spectrum."""
    import torchaudio

    banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
        NUM_MEL_BINS, FFT_SIZE, float(SAMPLE_RATE), LOW_FREQ, HIGH_FREQ, 100.0, -500.0, 1.0)
    matrix = np.pad(banks.numpy().astype(np.float64), ((0, 0), (0, 1)))
    matrix.setflags(write=False)
    return matrix


def _checked_logmel(logmel: np.ndarray) -> np.ndarray:
    """`logmel` as float64 T x 80; ValueError for another shape or a non-finite value (a NaN would
    silently turn the whole waveform into NaN)."""
    array = np.asarray(logmel, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != NUM_MEL_BINS:
        raise ValueError(f"log-mel frames must be T x {NUM_MEL_BINS}, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("log-mel frames hold a non-finite value (NaN or inf)")
    return array


def power_spectrum(logmel: np.ndarray, iterations: int = NNLS_ITERATIONS) -> np.ndarray:
    """T x 257 non-negative power spectra whose Kaldi mel energies fit `exp(logmel)` (T x 80, finite).

    80 mel energies do not determine 257 bins; a power spectrum cannot be negative, and the clamped
    pseudo-inverse misses the fit (log-mel error ~0.05-0.15). Multiplicative updates solve the
    non-negative least-squares problem instead: every step keeps the spectrum non-negative with no
    step size to tune. They start from each mel energy spread evenly over its filter, so bins no
    filter covers (DC, below 20 Hz, Nyquist), which the frames say nothing about, stay silent."""
    banks = kaldi_mel_banks()
    energies = np.exp(np.clip(logmel, None, LOG_CEILING))
    spectra = energies @ (banks / banks.sum(axis=1, keepdims=True))
    numerator = energies @ banks
    gram = banks.T @ banks
    tiny = np.finfo(np.float64).tiny
    for _ in range(iterations):
        spectra *= numerator / np.maximum(spectra @ gram, tiny)
    return spectra


def _povey_window(length: int):
    """Kaldi's default analysis window (a symmetric Hann window to the power 0.85)."""
    import torch

    return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(POVEY_EXPONENT)


def _griffin_lim(magnitude: np.ndarray, iterations: int) -> np.ndarray:
    """Pre-emphasised waveform of T x 257 STFT magnitudes, aligned with Kaldi's framing: sample 0 is
    the start of frame 0, and the length is the shortest giving T Kaldi frames (400 + 160 (T - 1)).

    Zero initial phase (`rand_init=False`) makes it deterministic; momentum is torchaudio's default
    (fast Griffin-Lim). See `EDGE_FRAMES` for why the ends are padded and cut."""
    import torch
    import torchaudio

    frames = len(magnitude)
    padded = np.pad(magnitude, ((EDGE_FRAMES, EDGE_FRAMES), (0, 0)), mode="edge")
    transform = torchaudio.transforms.GriffinLim(
        n_fft=FFT_SIZE, n_iter=iterations, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
        window_fn=_povey_window, power=1.0, rand_init=False)
    with torch.no_grad():
        wave = transform(torch.from_numpy(np.ascontiguousarray(padded.T, dtype=np.float32)))
    start = EDGE_FRAMES * HOP_LENGTH - WIN_LENGTH // 2  # Kaldi frame t is centred at 160 t + 200
    return wave.numpy()[start:start + WIN_LENGTH + HOP_LENGTH * (frames - 1)]


def _deemphasised(wave: np.ndarray) -> np.ndarray:
    """Undo Kaldi's pre-emphasis: y[n] = x[n] + 0.97 y[n-1].

    torchaudio's `deemphasis` is this filter but clamps its output to [-1, 1], clipping a loud
    waveform that `_peak_limited` would rather scale down; `lfilter` without clamping is used."""
    import torch
    import torchaudio

    a = torch.tensor([1.0, -PREEMPHASIS], dtype=torch.float64)
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    signal = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float64))[None]
    with torch.no_grad():
        return torchaudio.functional.lfilter(signal, a, b, clamp=False)[0].numpy()


def _silenced(wave: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """`wave` with the 400 samples of every silent frame (see `SILENCE_LOG`) set to zero. A frame at
    Kaldi's floor in every bin had constant samples, and one below `SILENCE_LOG` held nothing a 16-bit
    file can carry, so zero is what they were, whatever Griffin-Lim spread into them."""
    wave = wave.copy()
    for frame in np.flatnonzero(logmel.max(axis=1) < SILENCE_LOG):
        wave[frame * HOP_LENGTH:frame * HOP_LENGTH + WIN_LENGTH] = 0.0
    return wave


def _peak_limited(wave: np.ndarray) -> np.ndarray:
    """`wave` scaled to peak at `PEAK` if it would clip, else unchanged (its level is the frames')."""
    peak = float(np.max(np.abs(wave), initial=0.0))
    return wave * (PEAK / peak) if peak > 1.0 else wave


def waveform_from_fbank(logmel: np.ndarray, iterations: int = 32) -> np.ndarray:
    """Float32 mono waveform at 16 kHz in [-1, 1] of T x 80 raw Kaldi log-mel frames (`raw_fbank`'s).

    Its length is the shortest that gives T frames again (400 + 160 (T - 1) samples; the input's last
    < 10 ms are not in its frames, so cannot be recovered); no frames give an empty waveform.
    `iterations` is Griffin-Lim's: more is closer to the frames and slower (32: ~0.05 s of one CPU
    core per second of speech). ValueError for a shape other than T x 80 or a non-finite value."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    frames = _checked_logmel(logmel)
    if len(frames) == 0:
        return np.zeros(0, dtype=np.float32)
    magnitude = np.sqrt(power_spectrum(frames)) / KALDI_SCALE
    wave = _silenced(_deemphasised(_griffin_lim(magnitude, int(iterations))), frames)
    return _peak_limited(wave).astype(np.float32)


def _pcm16(waveform: np.ndarray) -> np.ndarray:
    """Int16 samples of a mono float waveform in [-1, 1] (values beyond are clipped, as any 16-bit
    recording would be); rounding is numpy's (half to even), so the bytes are deterministic."""
    wave = np.asarray(waveform, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"a waveform must be 1-D (mono), got shape {list(wave.shape)}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("the waveform holds a non-finite value (NaN or inf)")
    return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_wav(path: str | os.PathLike, waveform: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write a mono float waveform as a 16-bit PCM WAV file; returns the path.

    The file is encoded in memory and written to a temp file beside `path`, then renamed over it
    (`ofasys.data.io.atomic_write_bytes`): a listener or a killed process never sees half a file.
    The same waveform always gives the same bytes. Missing parent directories are created."""
    import soundfile as sf

    from ofasys.data.io import atomic_write_bytes

    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {rate!r}")
    samples = _pcm16(waveform)
    buffer = io.BytesIO()
    sf.write(buffer, samples, int(rate), format="WAV", subtype="PCM_16")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
