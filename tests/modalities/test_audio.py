"""AUDIO: real files (soundfile) of a real utterance (espeak-ng) -> fbank frames, collation, adaptor."""

from __future__ import annotations

import numpy as np
import pytest

from ofasys.modalities import MODALITIES, RejectRow, RowContext
from ofasys.modalities.audio import subsampled_length

AUDIO = MODALITIES["AUDIO"]
RATES = (8000, 16000, 22050, 44100)
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", None), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", None)}
LOSSLESS = ("wav", "flac")
BELOW_4KHZ = 59
"""Mel bins 0..58 of 80 (20 Hz - 8 kHz, Kaldi's mel scale) lie wholly below 4 kHz: all an 8 kHz
recording holds. Features are compared there, so every rate is compared on the same band."""
SAME = 0.8
"""Spectral-shape correlation (see `corr`) every encoding of the utterance reaches: lossless files
~1.0 at any rate, Vorbis and MP3 0.88-0.99 (lowest at 8 kHz)."""
SAME_LOSSLESS = 0.99
DIFFERENT = 0.5
"""A different utterance by the same voice, sharing two of its three words ("three seven two"),
reaches ~0.43: SAME is a meaningful bound."""


@pytest.fixture
def actx(tmp_path) -> RowContext:
    return RowContext(vocab=None, image_size=32, base_dir=tmp_path)  # AUDIO reads no vocabulary


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the spectral shapes of two feature arrays, over the frames both have: mel bins
    below 4 kHz, each frame's mean over them removed (loudness and silence, which any two utterances
    of one voice share, would otherwise dominate)."""
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n, :BELOW_4KHZ].astype(np.float64), b[:n, :BELOW_4KHZ].astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def kaldi_frames(samples: int, rate: int) -> int:
    """Kaldi's frame count (25 ms windows every 10 ms, whole windows only) of `samples` at `rate`
    once resampled to 16 kHz (ceil(n * 16000 / rate) samples): 100 frames per second, minus 1.5."""
    n16 = -(-samples * 16000 // rate)
    return 1 + (n16 - 400) // 160


def check_features(out, samples: int, rate: int, channels: int) -> None:
    """The shared contract of every materialised utterance."""
    assert out.array.dtype == np.float16 and out.array.ndim == 2 and out.array.shape[1] == 80
    duration = samples / rate
    assert out.meta == {"duration": round(duration, 6), "sample_rate": rate, "channels": channels}
    assert out.array.shape[0] == kaldi_frames(samples, rate)
    assert abs(out.array.shape[0] - 100 * duration) <= 2.5
    assert np.isfinite(out.array).all()
    # per-utterance normalisation: every mel dimension has mean 0 and std 1
    feats = out.array.astype(np.float32)
    assert np.abs(feats.mean(0)).max() < 0.01 and np.abs(feats.std(0) - 1).max() < 0.01


@pytest.fixture(scope="module")
def reference(utterance) -> np.ndarray:
    samples, rate = utterance
    ctx = RowContext(vocab=None, image_size=32)
    return AUDIO.materialise((samples, rate), {}, ctx).array


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_rate_and_layout_gives_the_same_features(
        fmt, rate, utterance, other_utterance, reference, resample, encode_audio, actx, tmp_path):
    """WAV/FLAC/Vorbis/MP3 x 8-44.1 kHz x mono/stereo x bytes/absolute path/relative path."""
    samples = resample(*utterance, rate)
    n = samples.shape[0]
    container, subtype = FORMATS[fmt]
    mono = encode_audio(samples, rate, container, subtype)
    stereo = encode_audio(np.stack([samples, samples], axis=1), rate, container, subtype)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / f"x.{fmt}").write_bytes(stereo)

    out = AUDIO.materialise(mono, {}, actx)
    check_features(out, n, rate, 1)
    assert corr(out.array, reference) > (SAME_LOSSLESS if fmt in LOSSLESS else SAME)
    from_stereo = AUDIO.materialise(stereo, {}, actx)
    check_features(from_stereo, n, rate, 2)
    if fmt in LOSSLESS:  # the channel mean of two equal channels is the mono signal
        np.testing.assert_array_equal(from_stereo.array, out.array)
    else:  # the codec encodes a stereo stream differently; its mean is still the utterance
        assert corr(from_stereo.array, out.array) > SAME
    for path in (tmp_path / "clips" / f"x.{fmt}", str(tmp_path / "clips" / f"x.{fmt}"), f"clips/x.{fmt}"):
        by_path = AUDIO.materialise(path, {}, actx)
        np.testing.assert_array_equal(by_path.array, from_stereo.array)
        assert by_path.meta == from_stereo.meta

    other = AUDIO.materialise(encode_audio(resample(*other_utterance, rate), rate, container, subtype), {}, actx)
    assert corr(other.array, reference) < DIFFERENT
    assert corr(other.array, out.array) < DIFFERENT


@pytest.mark.parametrize("rate", RATES)
def test_samples_and_hf_audio_dicts(rate, utterance, reference, resample, encode_audio, actx):
    """(samples, rate), HF datasets' {"array", "sampling_rate"} and {"bytes"/"path"}, mono and stereo
    in either layout: the features of the same file, and float16-close to each other."""
    samples = resample(*utterance, rate)
    n = samples.shape[0]
    out = AUDIO.materialise((samples, rate), {}, actx)
    check_features(out, n, rate, 1)
    assert corr(out.array, reference) > SAME_LOSSLESS
    hf = AUDIO.materialise({"array": samples, "sampling_rate": rate, "path": None}, {}, actx)
    np.testing.assert_array_equal(hf.array, out.array)
    for layout in (np.stack([samples, samples], axis=1), np.stack([samples, samples], axis=0)):
        st = AUDIO.materialise((layout, rate), {}, actx)
        check_features(st, n, rate, 2)
        np.testing.assert_array_equal(st.array, out.array)
    flac = encode_audio(samples, rate, "FLAC")  # 16-bit: differs from the floats by quantisation only
    direct = AUDIO.materialise(flac, {}, actx)
    assert corr(direct.array, out.array) > SAME_LOSSLESS
    (actx.base_dir / "u.flac").write_bytes(flac)
    for value in ({"bytes": flac, "path": "ignored.flac"}, {"bytes": None, "path": "u.flac"}):
        got = AUDIO.materialise(value, {}, actx)
        np.testing.assert_array_equal(got.array, direct.array)
        assert got.meta == direct.meta


def test_same_bytes_give_identical_arrays(utterance, encode_audio, actx):
    data = encode_audio(utterance[0], utterance[1], "OGG", "VORBIS")
    a = AUDIO.materialise(data, {}, actx).array
    b = AUDIO.materialise(bytes(data), {}, actx).array
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda u, enc: None, "missing audio"),
        (lambda u, enc: b"", "missing audio"),
        (lambda u, enc: {"array": None, "bytes": None, "path": None}, "missing audio"),
        (lambda u, enc: enc(u[0], u[1], "FLAC")[:30], "audio could not be decoded (LibsndfileError)"),
        (lambda u, enc: np.random.default_rng(0).bytes(4000), "audio could not be decoded (LibsndfileError)"),
        (lambda u, enc: "no/such/clip.wav", "audio file not found (no/such/clip.wav)"),
        (lambda u, enc: enc(np.zeros(0, np.float32), 16000, "WAV", "PCM_16"), "audio has no samples"),
        (lambda u, enc: enc(np.where(np.arange(len(u[0])) == 100, np.nan, u[0]).astype(np.float32), u[1], "WAV",
                            "FLOAT"), "audio has NaN or infinite samples"),
        (lambda u, enc: (np.array([0.0, np.inf] * 400, np.float32), 16000), "audio has NaN or infinite samples"),
        (lambda u, enc: enc(u[0][:551], u[1], "WAV", "PCM_16"),
         "audio is shorter than one 25 ms frame (551 samples at 22050 Hz)"),
        (lambda u, enc: (u[0], 16000.5), "audio sample rate must be a positive integer (got 16000.5)"),
        (lambda u, enc: 12, "unsupported audio value (int)"),
    ],
    ids=["none", "empty-bytes", "empty-dict", "truncated-flac", "random-bytes", "no-file", "zero-frames",
         "nan-wav", "inf-samples", "shorter-than-a-frame", "float-rate", "int"],
)
def test_bad_audio_is_rejected_with_its_reason(make, reason, utterance, encode_audio, actx):
    value = make(utterance, encode_audio)
    with pytest.raises(RejectRow) as e:
        AUDIO.materialise(value, {}, actx)
    assert e.value.reason == reason  # exact, deterministic text (rejects.jsonl is byte-identical)
    assert str(actx.base_dir) not in e.value.reason  # the path as written, not where it resolved


def test_one_frame_is_enough(utterance, encode_audio, actx):
    """552 samples at 22.05 kHz (just over 25 ms) -> one frame; 551 was rejected above."""
    out = AUDIO.materialise(encode_audio(utterance[0][:552], utterance[1], "WAV", "PCM_16"), {}, actx)
    assert out.array.shape == (1, 80)


def test_min_and_max_length(utterance, reference, encode_audio, actx):
    data = encode_audio(utterance[0], utterance[1], "FLAC")
    frames = AUDIO.materialise(data, {}, actx).array
    total = frames.shape[0]
    with pytest.raises(RejectRow) as e:
        AUDIO.materialise(data, {"min_length": total + 1}, actx)
    assert e.value.reason == f"audio has {total} frames, fewer than min_length={total + 1}"
    assert AUDIO.materialise(data, {"min_length": total}, actx).array.shape[0] == total
    cut = AUDIO.materialise(data, {"max_length": 40}, actx)
    # the first 40 frames of the utterance-normalised features (normalised over the whole clip)
    np.testing.assert_array_equal(cut.array, frames[:40])
    assert cut.meta["duration"] == round(len(utterance[0]) / utterance[1], 6)
    assert AUDIO.materialise(data, {"max_length": total + 10}, actx).array.shape[0] == total


# ----- collation -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(utterance) -> list[np.ndarray]:
    """Three utterances of different lengths (frame counts 115, 66, 39: odd, 2 mod 4, odd)."""
    ctx = RowContext(vocab=None, image_size=32)
    samples, rate = utterance
    arrays = [AUDIO.materialise((samples[:n], rate), {}, ctx).array for n in (len(samples), 15000, 9001)]
    assert [a.shape[0] for a in arrays] == [115, 66, 39]
    return arrays


def _rngs(*seeds: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in seeds]


def test_collate_pads_and_masks_without_augmenting_at_eval(batch):
    out, mask = AUDIO.collate(batch, {}, None)
    assert out.shape == (3, 115, 80) and out.dtype == np.float32
    assert mask.shape == (3, 115) and mask.dtype == bool
    assert mask.sum(1).tolist() == [115, 66, 39]
    for i, a in enumerate(batch):
        n = a.shape[0]
        assert mask[i, :n].all() and not mask[i, n:].any()
        np.testing.assert_array_equal(out[i, :n], a.astype(np.float32))  # eval: the exact features
        assert not out[i, n:].any()


def test_spec_augment_masks_bands_with_zeros_only_with_rngs(batch):
    clean, _ = AUDIO.collate(batch, {}, None)
    aug, mask = AUDIO.collate(batch, {}, _rngs(1, 2, 3))
    assert mask.sum(1).tolist() == [115, 66, 39]
    assert not np.array_equal(aug, clean)
    for i, a in enumerate(batch):
        n = a.shape[0]
        real, ref = aug[i, :n], clean[i, :n]
        changed = real != ref
        assert changed.any()
        assert (real[changed] == 0).all()  # masked = 0, the mean of the normalised features
        bands = (real == 0).all(axis=0)[None, :] | (real == 0).all(axis=1)[:, None]
        assert not (changed & ~bands).any()  # whole mel bands and whole frames, nothing else
        assert (real[bands] == 0).all()
        assert bands.all(axis=0).sum() <= 2 * 10 and (bands.all(axis=1).sum() <= 2 * int(n * 0.05))
        assert not aug[i, n:].any()  # padding stays zero


def test_spec_augment_is_seeded_per_sample(batch):
    a, _ = AUDIO.collate(batch, {}, _rngs(1, 2, 3))
    b, _ = AUDIO.collate(batch, {}, _rngs(1, 2, 3))
    c, _ = AUDIO.collate(batch, {}, _rngs(4, 5, 6))
    assert a.tobytes() == b.tobytes()
    for i in range(3):
        assert not np.array_equal(a[i], c[i])
    # a sample's masks depend on its generator only, not on its batch
    alone, _ = AUDIO.collate([batch[1]], {}, _rngs(2))
    np.testing.assert_array_equal(alone[0], a[1, :66])


# ----- the adaptor -----------------------------------------------------------------------------------

def test_adaptor_positions_and_padding_independence(batch):
    import torch

    from ofasys.model.config import ModelConfig

    cfg = ModelConfig(adaptors={"IMAGE": {}, "AUDIO": {}})
    torch.manual_seed(0)
    adaptor = AUDIO.build_adaptor(cfg).eval()
    positions = [AUDIO.encoder_positions(a, {}, cfg) for a in batch]
    assert positions == [subsampled_length(a.shape[0]) for a in batch] == [29, 17, 10]
    frames, mask = AUDIO.collate(batch, {}, None)
    with torch.no_grad():
        x, out_mask = adaptor(torch.from_numpy(frames), torch.from_numpy(mask))
        assert x.shape == (3, 29, cfg.d_model) and out_mask.dtype == torch.bool
        assert out_mask.sum(1).tolist() == positions
        assert all(out_mask[i, :p].all() and not out_mask[i, p:].any() for i, p in enumerate(positions))
        for i, a in enumerate(batch):
            f1, m1 = AUDIO.collate([a], {}, None)
            x1, o1 = adaptor(torch.from_numpy(f1), torch.from_numpy(m1))
            assert x1.shape[1] == positions[i] and o1.all()
            torch.testing.assert_close(x[i, : positions[i]], x1[0], atol=1e-5, rtol=1e-5)
            x2, o2 = adaptor(torch.from_numpy(f1), None)  # no mask = all real
            assert o2.all()
            torch.testing.assert_close(x2, x1)
