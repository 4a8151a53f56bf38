"""Short spoken sentences synthesised by espeak-ng, for speech recognition and speech-to-phones.

Why this shape: a ~1M-parameter model learns ASR on CPU in minutes only when the vocabulary is tiny
and utterances are short. A sentence is 2-4 words from `VOCABULARY` (the ten digit words plus six
colour and direction words), spoken by one of several espeak-ng voices and voice variants at a
seeded speed and pitch, so the model has to learn the words rather than one voice's waveform.

Held out: the sentence space (every sequence of 2-4 vocabulary words, about 70,000) is partitioned
once between train/valid/test by a stable hash of the sentence, and a split draws only its own
sentences, so no valid or test sentence is ever heard in training (single words necessarily are).

Containers: audio is stored as encoded bytes in a per-row container, so the materialiser's decoding
(soundfile, then resampling to 16 kHz) is exercised on what real corpora hold: mostly FLAC, some
WAV and Ogg/Vorbis, a few at 8, 22.05 or 44.1 kHz instead of 16 kHz, and a few stereo (the second
channel a delayed, quieter copy). Leading and trailing silence is trimmed to `MARGIN` and no
utterance is longer than `MAX_SECONDS` (a too-long one is re-spoken faster).

Determinism: espeak-ng output is a pure function of its arguments for one espeak-ng release (the
tables record `espeak-ng --version`); resampling runs in float64 and FLAC/WAV are written by
libsndfile deterministically. Two writers are not deterministic and are replaced: libsndfile's Ogg
writer draws a random stream serial number (rewritten to a constant, page checksums recomputed, by
`fixed_ogg_serial`), and its float WAV writer stamps the current time into a PEAK chunk (float WAV
is written by hand in `float_wav`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import shutil
import struct
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

VOCABULARY = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
              "red", "green", "blue", "left", "right", "stop")
"""The words sentences are made of (the phone task phonemises the same text)."""
LENGTHS = (2, 3, 4)
"""Words per sentence, each length equally likely."""
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Share of the sentence space assigned to each split (by hash, so sizes are approximate)."""
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029")
"""espeak-ng English voices: American, British ("en": espeak-ng 1.51 ignores a variant appended to
its alias "en-gb"), Scottish, Received Pronunciation, Caribbean. An unknown name is not an error
for espeak-ng (it falls back to a default voice), so a test checks every combination sounds
different."""
VARIANTS = ("", "+m3", "+m5", "+f2", "+f3", "+f4")
"""espeak-ng voice variants appended to the voice ("" = the voice's own, male)."""
SPEEDS = (140, 190)
"""Inclusive range of espeak-ng `-s` (words per minute)."""
PITCHES = (35, 65)
"""Inclusive range of espeak-ng `-p` (0-99, default 50)."""
SYNTH_RATE = 22050
"""espeak-ng's output sample rate."""
RATE = 16000
"""Sample rate of most rows (the materialiser's rate)."""
OTHER_RATES = ((SYNTH_RATE, 0.04), (8000, 0.04), (44100, 0.04))
"""(rate, probability) of rows stored at another rate than `RATE`."""
CONTAINER = "flac"
OTHER_CONTAINERS = (("wav", 0.1), ("ogg", 0.15))
"""(container, probability) of rows stored in another container than `CONTAINER`."""
STEREO = 0.05
"""Probability that a row is stored with two channels."""
MAX_SECONDS = 2.0
MARGIN = 0.04
"""Seconds of silence kept before the first and after the last audible sample."""
SILENCE = 64
"""|int16 sample| at or below this counts as silence when trimming."""
DAMAGE = ("truncated", "empty", "nan")
"""Kinds of damaged rows: a file cut inside its header, a WAV with 0 frames, a float WAV with NaNs."""


def sentence_split(words: tuple[str, ...]) -> str:
    """80/10/10 by a stable hash of the sentence (not Python's salted `hash`)."""
    digest = hashlib.sha256(("demo-sentence:" + " ".join(words)).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < SPLIT_FRACTIONS[0] else "valid" if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1] else "test"


@functools.cache
def _sentence_space() -> dict[str, dict[int, tuple[tuple[str, ...], ...]]]:
    space: dict[str, dict[int, list[tuple[str, ...]]]] = {s: {n: [] for n in LENGTHS} for s in SPLITS}
    for n in LENGTHS:
        for words in itertools.product(VOCABULARY, repeat=n):
            space[sentence_split(words)][n].append(words)
    return {s: {n: tuple(v) for n, v in by_len.items()} for s, by_len in space.items()}


def sentences(split: str, length: int) -> tuple[tuple[str, ...], ...]:
    """Every `length`-word sentence assigned to `split`, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return _sentence_space()[split][length]


@dataclass(frozen=True)
class Utterance:
    """Everything that determines one row's audio bytes."""

    text: str
    voice: str
    speed: int
    pitch: int
    container: str  # "flac" | "wav" | "ogg"
    rate: int
    channels: int


def _pick(rng: np.random.Generator, others: tuple[tuple[object, float], ...], usual: object) -> object:
    """One of `others` with its probability, else `usual` (one uniform draw either way)."""
    u = float(rng.random())
    for value, p in others:
        if u < p:
            return value
        u -= p
    return usual


def draw(rng: np.random.Generator, split: str) -> Utterance:
    """One utterance of `split`: sentence, voice, speed, pitch and storage, all from `rng`."""
    n = LENGTHS[int(rng.integers(len(LENGTHS)))]
    pool = sentences(split, n)
    words = pool[int(rng.integers(len(pool)))]
    voice = VOICES[int(rng.integers(len(VOICES)))] + VARIANTS[int(rng.integers(len(VARIANTS)))]
    return Utterance(
        text=" ".join(words),
        voice=voice,
        speed=int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)),
        pitch=int(rng.integers(PITCHES[0], PITCHES[1] + 1)),
        container=str(_pick(rng, OTHER_CONTAINERS, CONTAINER)),
        rate=int(_pick(rng, OTHER_RATES, RATE)),
        channels=2 if float(rng.random()) < STEREO else 1,
    )


TTS_VOICE, TTS_SPEED, TTS_PITCH = "en-us", 160, 50
"""The one speaker of the text-to-speech rows: a TTS corpus is one voice at one pace (as LJSpeech), so
the text alone fixes the speech to learn."""


def draw_single_speaker(rng: np.random.Generator, split: str) -> Utterance:
    """One utterance of `split` spoken by the TTS speaker: the sentence from `rng`, stored as 16 kHz FLAC."""
    n = LENGTHS[int(rng.integers(len(LENGTHS)))]
    pool = sentences(split, n)
    words = pool[int(rng.integers(len(pool)))]
    return Utterance(text=" ".join(words), voice=TTS_VOICE, speed=TTS_SPEED, pitch=TTS_PITCH,
                     container=CONTAINER, rate=RATE, channels=1)


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError("espeak-ng: not found on PATH; the speech demo needs the Debian package "
                                "espeak-ng (scripts/setup.sh installs it: apt-get install espeak-ng)")
    return path


@functools.cache
def espeak_version() -> str:
    """`espeak-ng --version` (the release decides the exact waveform)."""
    out = subprocess.run([_espeak(), "--version"], capture_output=True, check=True, text=True).stdout
    return out.split("  Data at:")[0].strip()


def _synthesise(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """int16 mono samples at `SYNTH_RATE`, silence trimmed to `MARGIN`."""
    proc = subprocess.run([_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise RuntimeError(f"espeak-ng failed for voice {voice!r} on {text!r}: "
                           f"{proc.stderr.decode(errors='replace').strip() or f'exit {proc.returncode}'}")
    import soundfile as sf

    # A streamed WAV (its size fields are placeholders); libsndfile reads it to the end of the data.
    samples, rate = sf.read(io.BytesIO(proc.stdout), dtype="int16")
    if rate != SYNTH_RATE or samples.ndim != 1:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio with shape {samples.shape}; expected mono "
                           f"{SYNTH_RATE} Hz (is this espeak-ng 1.5x?)")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for voice {voice!r} on {text!r}")
    margin = int(MARGIN * SYNTH_RATE)
    return samples[max(loud[0] - margin, 0) : loud[-1] + 1 + margin].copy()


def speak(utt: Utterance) -> np.ndarray:
    """int16 mono samples at `SYNTH_RATE`, re-spoken faster until at most `MAX_SECONDS` long."""
    speed = utt.speed
    while True:
        samples = _synthesise(utt.text, utt.voice, speed, utt.pitch)
        if len(samples) <= MAX_SECONDS * SYNTH_RATE or speed >= 400:
            return samples
        speed += 20


@functools.cache
def _resampler(rate: int):
    """A float64 sinc resampler `SYNTH_RATE` -> `rate`; its kernel is built once and never changed."""
    import torch
    import torchaudio.transforms as AT

    return AT.Resample(SYNTH_RATE, rate, dtype=torch.float64).eval()


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 samples at `SYNTH_RATE` -> int16 at `rate` (float64 sinc resampling: deterministic)."""
    if rate == SYNTH_RATE:
        return samples
    import torch

    with torch.inference_mode():
        out = _resampler(rate)(torch.from_numpy(samples.astype(np.float64))).numpy()
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def to_channels(samples: np.ndarray, channels: int, rate: int) -> np.ndarray:
    """Mono -> frames x channels; the second channel is a 0.7x copy delayed by 2 ms."""
    if channels == 1:
        return samples
    delay = int(0.002 * rate)
    second = np.concatenate([np.zeros(delay, np.int16), samples[: len(samples) - delay]])
    second = np.rint(second.astype(np.float64) * 0.7).astype(np.int16)
    return np.stack([samples, second], axis=1)


def encode(samples: np.ndarray, rate: int, container: str) -> bytes:
    """int16 samples (frames or frames x channels) -> FLAC / WAV (PCM 16) / Ogg Vorbis bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    if container == "flac":
        sf.write(buf, samples, rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
    elif container == "wav":
        sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    elif container == "ogg":
        sf.write(buf, samples.astype(np.float32) / 32768.0, rate, format="OGG", subtype="VORBIS")
        return fixed_ogg_serial(buf.getvalue())
    else:
        raise ValueError(f"container must be flac, wav or ogg, got {container!r}")
    return buf.getvalue()


def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_OGG_CRC = _ogg_crc_table()


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, MSB first, init 0) of `page` as given."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc


OGG_SERIAL = 0x0FA5D3E0
"""The stream serial number every Ogg row is given (libsndfile would draw a random one)."""


def fixed_ogg_serial(data: bytes, serial: int = OGG_SERIAL) -> bytes:
    """`data` (a single-stream Ogg file) with every page's serial set to `serial`, checksums redone."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS" or pos + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {pos}")
        nseg = out[pos + 26]
        size = 27 + nseg + sum(out[pos + 27 : pos + 27 + nseg])
        out[pos + 14 : pos + 18] = struct.pack("<I", serial)
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = struct.pack("<I", ogg_crc(bytes(out[pos : pos + size])))
        pos += size
    return bytes(out)


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    """Mono float32 samples -> an IEEE-float WAV (RIFF, fmt format 3, fact, data), no timestamp."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, rate, rate * 4, 4, 32, 0)
    fact = struct.pack("<I", len(samples))
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
              + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def empty_wav(rate: int = RATE) -> bytes:
    """A valid 16-bit mono PCM WAV holding zero frames."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"")
    return buf.getvalue()


TRUNCATE_AT = 32
"""Bytes kept of a truncated file: inside the header of every container used, so nothing decodes."""


def render(utt: Utterance, damage: str | None = None) -> bytes:
    """The stored bytes of `utt`, or of its damaged version (`damage` one of `DAMAGE`)."""
    if damage == "empty":
        return empty_wav(utt.rate)
    samples = resample(speak(utt), utt.rate)
    if damage == "nan":
        audio = samples.astype(np.float32) / 32768.0
        start, stop = len(audio) // 3, len(audio) // 3 + max(len(audio) // 10, 1)
        audio[start:stop] = np.nan
        return float_wav(audio, utt.rate)
    data = encode(to_channels(samples, utt.channels, utt.rate), utt.rate, utt.container)
    if damage == "truncated":
        return data[:TRUNCATE_AT]
    if damage is not None:
        raise ValueError(f"damage must be one of {', '.join(DAMAGE)}, got {damage!r}")
    return data


def render_all(utts: list[Utterance], damage: dict[int, str], workers: int = 2) -> list[bytes]:
    """`render` for every utterance, in order; rows are independent, so threads (each waiting on its
    own espeak-ng process) change the speed, never the bytes."""
    jobs = [(utt, damage.get(i)) for i, utt in enumerate(utts)]
    if workers <= 1 or len(jobs) < 2:
        return [render(u, d) for u, d in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: render(*job), jobs))
