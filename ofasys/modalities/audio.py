"""AUDIO: wav / flac / ogg / mp3 (path, bytes, or samples + rate) -> float16 T x 80 Kaldi fbank.

Materialisation (once): decode with soundfile (any sample rate, any channel count), mix to mono by
the channel mean, resample to 16 kHz (torchaudio), 80-dim Kaldi log-mel filterbank with 25 ms
windows every 10 ms (torchaudio.compliance.kaldi, the features speech toolkits such as fairseq S2T
and ESPnet use), normalised per utterance to zero mean and unit variance per dimension (so loudness
and channel differences do not matter), stored as float16. Collation (per epoch): SpecAugment
(frequency and time masks) drawn from the per-sample generators the collator seeds by
(seed, epoch, key), off at evaluation. The adaptor (`audio_fbank`): two stride-2 1-D convolutions
(x4 subsampling: 100 frames/s -> 25 positions/s, as fairseq S2T's Conv1dSubsampler) and a linear
map to the model width; the encoder adds its 1-D positions.

Bad input is a rejected row with a reason: unreadable or truncated files, zero-length audio,
non-finite samples, audio shorter than one 25 ms window or than `min_length` frames.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ofasys.modalities.base import (NO_ASSETS, Materialised, Modality, RejectRow, RowContext, check_head_settings,
                                   is_missing, media_path)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch.nn as nn

    from ofasys.model.config import ModelConfig

SAMPLE_RATE = 16000
"""Every waveform is resampled to this rate before features are computed."""
NUM_MEL_BINS = 80
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0
SUBSAMPLING_LAYERS = 2
"""Stride-2 convolutions in the adaptor: 2 -> x4 fewer positions than frames."""

FREQ_MASKS, FREQ_MASK_WIDTH = 2, 10
"""SpecAugment: two frequency masks, each up to 10 of the 80 mel bins."""
TIME_MASKS, TIME_MASK_SHARE = 2, 0.05
"""SpecAugment: two time masks, each up to 5% of the utterance's frames."""


@dataclass(frozen=True)
class AudioAdaptorConfig:
    """`model.adaptors.AUDIO`: how fbank frames become encoder positions."""

    channels: int = 128
    """Channels of the two subsampling convolutions."""
    kernel_size: int = 3
    """Kernel of each (odd, so padding keeps frame alignment) convolution."""

    def __post_init__(self) -> None:
        if self.channels <= 0:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")


def subsampled_length(frames: int) -> int:
    """Positions the adaptor makes from `frames` fbank frames: ceil(n / 2) per stride-2 conv."""
    n = int(frames)
    for _ in range(SUBSAMPLING_LAYERS):
        n = -(-n // 2)
    return n


def read_audio(value: Any, base_dir: Path | None = None) -> tuple[np.ndarray, int]:
    """(float32 samples as frames x channels, sample rate) of any supported raw value, or RejectRow."""
    import soundfile as sf

    if is_missing(value):
        raise RejectRow("missing audio")
    if isinstance(value, Mapping):  # HF datasets' Audio feature
        if value.get("array") is not None and value.get("sampling_rate"):
            return _samples(np.asarray(value["array"]), value["sampling_rate"])
        value = value.get("bytes") or value.get("path")
        if not value:
            raise RejectRow("missing audio")
    if isinstance(value, tuple) and len(value) == 2:  # (samples, rate)
        return _samples(np.asarray(value[0]), value[1])
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise RejectRow("missing audio")
        source: Any = io.BytesIO(bytes(value))
    elif isinstance(value, (str, Path)):
        source = media_path(value, base_dir, "audio")
    else:
        raise RejectRow(f"unsupported audio value ({type(value).__name__})")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports many kinds of bad data; keep the reason deterministic
        raise RejectRow(f"audio could not be decoded ({type(exc).__name__})") from None
    return data, int(rate)


def _samples(array: np.ndarray, rate: Any) -> tuple[np.ndarray, int]:
    if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.number):
        raise RejectRow(f"audio samples must be a 1-D or 2-D number array (got shape {list(array.shape)})")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise RejectRow(f"audio sample rate must be a positive integer (got {rate!r})")
    data = array.astype(np.float32)
    if data.ndim == 1:
        data = data[:, None]
    elif data.shape[0] < data.shape[1]:  # channels x frames
        data = data.T
    return data, int(rate)


def raw_fbank(samples: np.ndarray, rate: int) -> np.ndarray:
    """T x 80 float32 Kaldi log-mel filterbank of mono float samples at `rate` Hz, not normalised: what
    speech is generated as (`audio_tgt_fbank`), since a waveform can be recovered only from absolute
    levels."""
    import torch
    import torchaudio

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    if rate != SAMPLE_RATE:
        wave = torchaudio.functional.resample(wave, rate, SAMPLE_RATE)
    return torchaudio.compliance.kaldi.fbank(
        wave * 32768.0,  # Kaldi's features are defined on 16-bit sample values
        num_mel_bins=NUM_MEL_BINS, frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
        sample_frequency=SAMPLE_RATE, dither=0.0, energy_floor=0.0,
    ).numpy()


def utterance_normalised(feats: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per dimension over the utterance (what the encoder reads)."""
    mean, std = feats.mean(0, keepdims=True), feats.std(0, keepdims=True)
    return (feats - mean) / np.maximum(std, 1e-5)


def fbank(samples: np.ndarray, rate: int) -> np.ndarray:
    """T x 80 float32 utterance-normalised log-mel filterbank of mono float samples at `rate` Hz."""
    return utterance_normalised(raw_fbank(samples, rate))


FRAMES_PER_STEP = 4
"""Fbank frames one decoder step of generated speech makes (Tacotron's reduction factor): 40 ms a step,
so two seconds of speech take 50 decoder positions instead of 200."""
TARGET_WIDTH = FRAMES_PER_STEP * NUM_MEL_BINS
"""Numbers per stored row of an `audio_tgt_fbank` array: `FRAMES_PER_STEP` frames side by side."""


@dataclass(frozen=True)
class SpeechHeadConfig:
    """`model.output_heads.AUDIO`: how decoder states become fbank frames (`ofasys.modalities.heads`)."""

    hidden: int = 128
    """Channels of the post-net's convolutions."""
    postnet_layers: int = 2
    """Convolutions of the residual post-net (Tacotron 2 uses 5 of 512 channels; 2 of 128 suit the tiny
    CPU model)."""
    kernel_size: int = 5
    """Kernel of each post-net convolution (odd: padding keeps the frames aligned)."""
    loss_weight: float = 1.0
    """Weight of the frames' L1 loss beside the placeholders' go-on/stop cross-entropy."""

    def __post_init__(self) -> None:
        check_head_settings(self, ("hidden", "postnet_layers"))


def _decoded_mono(value: Any, ctx: RowContext) -> tuple[np.ndarray, np.ndarray, int]:
    """(samples as frames x channels, their channel mean, the rate) of a raw cell, or RejectRow."""
    data, rate = read_audio(value, ctx.base_dir)
    if data.shape[0] == 0:
        raise RejectRow("audio has no samples")
    if not np.isfinite(data).all():
        raise RejectRow("audio has NaN or infinite samples")
    mono = data.mean(axis=1)
    if mono.shape[0] < rate * FRAME_LENGTH_MS / 1000.0:
        raise RejectRow(f"audio is shorter than one {FRAME_LENGTH_MS:g} ms frame ({mono.shape[0]} samples at {rate} Hz)")
    return data, mono, rate


def _frame_limits(feats: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """`feats` cut to the slot's `max_length` frames, or RejectRow below its `min_length`."""
    min_length = int(attrs.get("min_length") or 0)
    if feats.shape[0] < min_length:
        raise RejectRow(f"audio has {feats.shape[0]} frames, fewer than min_length={min_length}")
    max_length = attrs.get("max_length")
    return feats[: int(max_length)] if max_length else feats


class Audio(Modality):
    name = "AUDIO"
    doc = "wav/flac/ogg/mp3 path, bytes or samples -> float16 T x 80 fbank (16 kHz); conv x4 subsampling adaptor"
    dtype = "float16"
    speech = True
    token_run = False
    media_files = True
    shrink_hint = "add max_length= (frames) to the AUDIO slot"
    attributes = {"AUDIO": frozenset({"max_length", "min_length", "preprocess", "adaptor", "disable_auto_boseos"})}
    materialise_attrs = ("max_length", "min_length")
    preprocess = {
        "default": None,
        "audio": None,
        "audio_tgt_fbank": None,
        "audio_embed": "not supported yet: pre-computed audio embeddings; use the default (fbank of the waveform)",
    }
    adaptors = {
        "default": None,
        "audio_fbank": None,
        "audio_tgt_fbank": None,
    }
    adaptor_config = AudioAdaptorConfig
    head_config = SpeechHeadConfig

    def variant(self, preprocess: str | None) -> Modality:
        return AUDIO_TARGET if preprocess == "audio_tgt_fbank" else self

    def build_output_head(self, model: "ModelConfig") -> "nn.Module":
        from ofasys.modalities.heads import RegressionHead

        cfg = model.output_head(self.name)
        return RegressionHead(TARGET_WIDTH, model.d_model, hidden=cfg.hidden, postnet_layers=cfg.postnet_layers,
                              kernel_size=cfg.kernel_size, loss_weight=cfg.loss_weight)

    def shape(self, image_size: int) -> list[int | None]:
        return [None, NUM_MEL_BINS]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        data, mono, rate = _decoded_mono(value, ctx)
        feats = _frame_limits(fbank(mono, rate), attrs)
        meta = {"duration": round(data.shape[0] / rate, 6), "sample_rate": rate, "channels": int(data.shape[1])}
        return Materialised(feats.astype(np.float16), meta=meta)

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        return subsampled_length(array.shape[0])

    def collate(self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                rngs: Sequence[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """B x T x 80 float32 (zero-padded) and the B x T frame mask; SpecAugment when `rngs`."""
        longest = max(a.shape[0] for a in arrays)
        out = np.zeros((len(arrays), longest, NUM_MEL_BINS), np.float32)
        mask = np.zeros((len(arrays), longest), bool)
        for i, a in enumerate(arrays):
            out[i, : a.shape[0]] = a
            mask[i, : a.shape[0]] = True
            if rngs is not None:
                spec_augment(out[i, : a.shape[0]], rngs[i])
        return out, mask

    def build_adaptor(self, model: "ModelConfig") -> "nn.Module":
        return _adaptor_class()(model.adaptor(self.name), model.d_model)


class AudioTarget(Modality):
    """An AUDIO output slot with `preprocess=audio_tgt_fbank`: speech to generate, as raw log-mel frames.

    Stored as float16 rows of `FRAMES_PER_STEP` consecutive 80-dim Kaldi fbank frames (the last row
    filled by repeating the final frame), not normalised per utterance: a waveform can be recovered
    from absolute levels only (`ofasys.modalities.speech_synthesis`). The model generates one row per
    decoder step through its AUDIO output head (`SpeechHeadConfig`) and stops with `<eos>`; the decoded
    value is the T x 80 log-mel array, which `OFASys.inference(...).audio` turns into a waveform."""

    name = "AUDIO"
    member_tag = "audio_tgt"
    doc = "preprocess=audio_tgt_fbank: speech to generate, as raw 80-dim fbank frames (4 per decoder step)"
    dtype = "float16"
    speech = True
    token_run = False
    media_files = True
    frame_output = True
    input_side = False
    output_field = "audio"
    materialise_attrs = ("max_length", "min_length")

    def shape(self, image_size: int) -> list[int | None]:
        return [None, TARGET_WIDTH]

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        data, mono, rate = _decoded_mono(value, ctx)
        feats = _frame_limits(raw_fbank(mono, rate), attrs)
        rows = -(-feats.shape[0] // FRAMES_PER_STEP)
        padded = np.concatenate([feats, np.repeat(feats[-1:], rows * FRAMES_PER_STEP - feats.shape[0], 0)])
        meta = {"duration": round(data.shape[0] / rate, 6), "sample_rate": rate, "channels": int(data.shape[1]),
                "frames": int(feats.shape[0])}
        return Materialised(padded.reshape(rows, TARGET_WIDTH).astype(np.float16), meta=meta)

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        return 0  # never on the input side (`input_side`)

    def max_steps(self, attrs: Mapping[str, Any]) -> int | None:
        value = attrs.get("max_length")
        return None if value is None else -(-int(value) // FRAMES_PER_STEP)

    def output_step(self, column, attrs, vocab, *, terminator, closed_labels, default_max, assets=NO_ASSETS):
        return self.frame_output_step(column, attrs, vocab, terminator, assets)

    def decode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Generated rows -> the T x 80 float32 log-mel frames they hold."""
        return np.asarray(frames, np.float32).reshape(-1, NUM_MEL_BINS)

    def typed_output(self, value: Any, stats: Mapping[str, Any]) -> "GeneratedSpeech":
        return GeneratedSpeech(np.asarray(value, np.float32))

    def save_output(self, value: Any, stem: Path, stats: Mapping[str, Any]) -> Path:
        """A 16 kHz 16-bit WAV of the log-mel frames, by Griffin-Lim (`speech_synthesis`)."""
        from ofasys.modalities.speech_synthesis import waveform_from_fbank, write_wav

        return write_wav(stem.with_name(stem.name + ".wav"), waveform_from_fbank(value), SAMPLE_RATE)


AUDIO_TARGET = AudioTarget()


@dataclass(frozen=True)
class GeneratedSpeech:
    """Generated speech (`OFASys.inference(...).audio`): its log-mel frames, and the waveform Griffin-Lim
    recovers from them."""

    fbank: np.ndarray
    """T x 80 float32 raw Kaldi log-mel frames, 10 ms apart."""
    sample_rate: int = SAMPLE_RATE

    @functools.cached_property
    def waveform(self) -> np.ndarray:
        """float32 mono samples in [-1, 1] at `sample_rate` (`speech_synthesis.waveform_from_fbank`)."""
        from ofasys.modalities.speech_synthesis import waveform_from_fbank

        return waveform_from_fbank(self.fbank)

    def save(self, path: str | Path) -> Path:
        """Write the waveform as a 16-bit WAV."""
        from ofasys.modalities.speech_synthesis import write_wav

        return write_wav(path, self.waveform, self.sample_rate)


def spec_augment(frames: np.ndarray, rng: np.random.Generator) -> None:
    """SpecAugment's masks, in place on normalised T x F frames: masked values become 0 (the mean)."""
    t, f = frames.shape
    for _ in range(FREQ_MASKS):
        width = int(rng.integers(0, FREQ_MASK_WIDTH + 1))
        start = int(rng.integers(0, f - width + 1))
        frames[:, start : start + width] = 0.0
    max_width = int(t * TIME_MASK_SHARE)
    for _ in range(TIME_MASKS):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, t - width + 1))
        frames[start : start + width] = 0.0


@functools.cache
def _adaptor_class():
    """The audio adaptor's nn.Module class, defined on first use so that importing this file (the
    instruction parser does, when params load) does not import torch."""
    import torch
    import torch.nn as nn

    class AudioAdaptor(nn.Module):
        """B x T x 80 frames + B x T mask -> B x ceil(T/4) x d_model + the subsampled mask."""

        def __init__(self, config: AudioAdaptorConfig, d_model: int):
            super().__init__()
            pad = config.kernel_size // 2
            self.convs = nn.ModuleList([
                nn.Conv1d(NUM_MEL_BINS, config.channels, config.kernel_size, stride=2, padding=pad),
                nn.Conv1d(config.channels, config.channels, config.kernel_size, stride=2, padding=pad),
            ])
            self.proj = nn.Linear(config.channels, d_model)

        def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None):
            dtype = self.proj.weight.dtype
            x = frames.to(dtype)
            if mask is not None:
                x = x * mask[..., None].to(dtype)  # padding stays silent through the convolutions
            x = x.transpose(1, 2)  # B x 80 x T
            lengths = None if mask is None else mask.sum(1)
            keep = None
            for conv in self.convs:
                x = nn.functional.gelu(conv(x))
                if lengths is not None:
                    # Re-silence the padding after every layer: gelu(bias) is not 0, and the next
                    # convolution's window at a sample's last real position reaches into it, so
                    # without this a sample's output would depend on how much padding its batch has.
                    lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
                    keep = torch.arange(x.shape[2], device=x.device)[None] < lengths[:, None]
                    x = x * keep[:, None].to(dtype)
            x = self.proj(x.transpose(1, 2))  # B x T' x d
            if keep is None:
                return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            return x, keep

    return AudioAdaptor
