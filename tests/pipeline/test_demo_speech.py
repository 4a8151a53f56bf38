"""The speech demo: espeak-ng utterances, deterministic bytes, held-out sentences, varied containers, damage."""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import struct
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.demo import generate, speech, table_meta, tasks


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


def _read(data: bytes, dtype: str = "float64") -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(data), dtype=dtype)


def _utterances(split: str, size: int, seed: int) -> list[speech.Utterance]:
    """The utterances `tasks.asr` draws for these arguments (same stream, same order)."""
    rng = tasks._rng(seed, "asr", split)
    return [speech.draw(rng, split) for _ in range(size)]


def _ogg_pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        pages.append(data[pos : pos + size])
        pos += size
    return pages


@pytest.fixture(scope="module")
def train_table() -> pa.Table:
    return generate("asr", "train", 24, seed=3, corrupt=3)


def test_same_arguments_same_bytes_other_seed_other_table(train_table):
    again = generate("asr", "train", 24, seed=3, corrupt=3)
    assert _parquet_bytes(again) == _parquet_bytes(train_table)
    # The table holds Ogg rows, whose serial number libsndfile alone would draw at random.
    assert "ogg" in {u.container for u in _utterances("train", 24, 3)}
    assert not generate("asr", "train", 24, seed=4, corrupt=3).equals(train_table)


def test_schema_and_metadata(train_table):
    assert train_table.column_names == ["wav", "text"]
    assert pa.types.is_binary(train_table.schema.field("wav").type)
    assert pa.types.is_string(train_table.schema.field("text").type)
    meta = table_meta(train_table)
    assert (meta["generator"], meta["split"], meta["size"], meta["seed"]) == ("asr", "train", 24, 3)
    assert meta["synthesiser"].startswith("eSpeak NG") and "1.5" in meta["synthesiser"]


def test_growing_a_split_only_appends_rows_and_threads_do_not_change_bytes():
    small = generate("asr", "valid", 4, seed=1)
    large = generate("asr", "valid", 7, seed=1)
    assert large.slice(0, 4).equals(small)
    utts = _utterances("valid", 4, 1)
    assert speech.render_all(utts, {}, workers=1) == speech.render_all(utts, {}, workers=3)


def test_sentence_space_is_partitioned_so_valid_and_test_sentences_are_never_trained_on():
    space = {s: {w for n in speech.LENGTHS for w in speech.sentences(s, n)} for s in speech.SPLITS}
    assert not space["train"] & space["valid"] and not space["train"] & space["test"]
    assert not space["valid"] & space["test"]
    v = len(speech.VOCABULARY)
    total = v**2 + v**3 + v**4
    assert sum(len(s) for s in space.values()) == total
    assert 0.77 < len(space["train"]) / total < 0.83 and len(space["test"]) / total > 0.08
    assert all(speech.sentences(s, 2) for s in speech.SPLITS)  # every split has 2-word sentences
    spoken = {}
    for split in ("valid", "test"):
        texts = generate("asr", split, 8, seed=5).column("text").to_pylist()
        spoken[split] = {tuple(t.split()) for t in texts}
        assert spoken[split] <= space[split]
    train_draws = {tuple(u.text.split()) for u in _utterances("train", 3000, 5)}
    assert train_draws <= space["train"]
    assert not train_draws & (space["valid"] | space["test"])


def test_draws_mix_lengths_voices_speeds_containers_rates_and_channels():
    utts = _utterances("train", 3000, 0)
    lengths = collections.Counter(len(u.text.split()) for u in utts)
    assert set(lengths) == set(speech.LENGTHS) and min(lengths.values()) > 900
    assert {w for u in utts for w in u.text.split()} == set(speech.VOCABULARY)
    assert len({u.voice for u in utts}) == len(speech.VOICES) * len(speech.VARIANTS)
    assert min(u.speed for u in utts) == speech.SPEEDS[0] and max(u.speed for u in utts) == speech.SPEEDS[1]
    assert len({u.pitch for u in utts}) == speech.PITCHES[1] - speech.PITCHES[0] + 1
    containers = collections.Counter(u.container for u in utts)
    assert containers["flac"] > 2000 and containers["wav"] > 200 and containers["ogg"] > 350
    rates = collections.Counter(u.rate for u in utts)
    assert rates[16000] > 2400 and all(rates[r] > 60 for r in (8000, 22050, 44100))
    stereo = sum(u.channels == 2 for u in utts)
    assert 90 < stereo < 220


def test_every_voice_and_variant_sounds_different():
    # espeak-ng falls back silently on a name it does not know (and ignores variants of "en-gb").
    digests = {hashlib.sha256(speech._synthesise("three seven", voice + variant, 160, 50).tobytes()).digest()
               for voice, variant in itertools.product(speech.VOICES, speech.VARIANTS)}
    assert len(digests) == len(speech.VOICES) * len(speech.VARIANTS)


@pytest.mark.parametrize("container", ["flac", "wav", "ogg"])
@pytest.mark.parametrize("rate", [16000, 8000, 22050, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_container_rate_and_channel_count_decodes(container, rate, channels):
    utt = speech.Utterance("one two", "en-us+f3", 170, 50, container, rate, channels)
    data = speech.render(utt)
    info = sf.info(io.BytesIO(data))
    assert info.format == container.upper()
    assert (info.samplerate, info.channels) == (rate, channels)
    audio, got_rate = _read(data)
    assert got_rate == rate and np.isfinite(audio).all()
    mono = audio if channels == 1 else audio[:, 0]
    want = speech.resample(speech.speak(utt), rate).astype(np.float64) / 32768
    assert mono.shape == want.shape
    if container == "ogg":  # lossy, but the same waveform
        assert np.corrcoef(mono, want)[0, 1] > 0.9
    else:
        assert np.array_equal(mono, want)
    if channels == 2:  # a delayed, quieter copy, not the same channel twice
        assert not np.array_equal(audio[:, 0], audio[:, 1])
        assert np.abs(audio[:, 1]).max() < np.abs(audio[:, 0]).max()


def test_generated_rows_hold_their_sentence_and_last_under_two_seconds(train_table):
    bad = set(table_meta(train_table)["corrupt_rows"])
    utts = _utterances("train", 24, 3)
    for row, (rec, utt) in enumerate(zip(train_table.to_pylist(), utts)):
        assert rec["text"] == utt.text
        if row in bad:
            continue
        audio, rate = _read(rec["wav"])
        assert rate == utt.rate and len(audio) / rate <= speech.MAX_SECONDS + 1e-9
        mono = audio if audio.ndim == 1 else audio[:, 0]
        if utt.container != "ogg":
            assert np.array_equal(mono, speech.resample(speech.speak(utt), rate) / 32768)
        assert np.abs(mono).max() > 0.1


def test_trailing_silence_is_trimmed_to_the_margin():
    raw, rate = _read(subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", "four two"],
                                     capture_output=True, check=True).stdout, dtype="int16")
    trimmed = speech._synthesise("four two", "en-us", 160, 50)
    margin = int(speech.MARGIN * speech.SYNTH_RATE)
    assert rate == speech.SYNTH_RATE and len(raw) - len(trimmed) > 0.3 * rate  # espeak-ng pads ~0.5 s
    assert np.abs(trimmed[-margin:].astype(np.int32)).max() <= speech.SILENCE
    assert abs(int(trimmed[-margin - 1])) > speech.SILENCE
    start = int(np.flatnonzero(np.abs(raw.astype(np.int32)) > speech.SILENCE)[0])
    assert np.array_equal(trimmed, raw[max(start - margin, 0) : max(start - margin, 0) + len(trimmed)])


def test_too_long_utterances_are_spoken_faster():
    utt = speech.Utterance("seven seven seven seven", "en-gb-scotland+f2", speech.SPEEDS[0], 35, "flac", 16000, 1)
    assert len(speech._synthesise(utt.text, utt.voice, utt.speed, utt.pitch)) > speech.MAX_SECONDS * speech.SYNTH_RATE
    assert len(speech.speak(utt)) <= speech.MAX_SECONDS * speech.SYNTH_RATE


def test_ogg_serial_is_fixed_and_checksums_stay_valid():
    samples = speech.resample(speech.speak(speech.Utterance("red left", "en", 160, 50, "ogg", 16000, 1)), 16000)
    raw = io.BytesIO()
    sf.write(raw, samples.astype(np.float32) / 32768, 16000, format="OGG", subtype="VORBIS")
    raw = raw.getvalue()
    for page in _ogg_pages(raw):  # the checksum agrees with libogg's on untouched pages
        assert speech.ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) == struct.unpack("<I", page[22:26])[0]
    fixed = speech.fixed_ogg_serial(raw)
    pages = _ogg_pages(fixed)
    assert len(pages) >= 3 and all(struct.unpack("<I", p[14:18])[0] == speech.OGG_SERIAL for p in pages)
    # libogg drops pages whose checksum is wrong: identical samples prove every page survived.
    assert np.array_equal(_read(fixed)[0], _read(raw)[0])
    assert speech.encode(samples, 16000, "ogg") == speech.encode(samples, 16000, "ogg") == fixed
    with pytest.raises(ValueError, match="not an Ogg page"):
        speech.fixed_ogg_serial(b"RIFF" + bytes(40))


def test_corrupt_rows_are_truncated_empty_or_nan():
    table = generate("asr", "test", 10, seed=6, corrupt=6)
    meta = table_meta(table)
    kinds = {k: meta[f"corrupt_{k}_rows"] for k in speech.DAMAGE}
    assert all(len(rows) == 2 for rows in kinds.values())
    assert sorted(r for rows in kinds.values() for r in rows) == meta["corrupt_rows"]
    for row, data in enumerate(table.column("wav").to_pylist()):
        if row in kinds["truncated"]:
            assert len(data) == speech.TRUNCATE_AT
            with pytest.raises(sf.LibsndfileError):
                _read(data)
        elif row in kinds["empty"]:
            audio, _ = _read(data)
            assert audio.shape == (0,) and sf.info(io.BytesIO(data)).format == "WAV"
        elif row in kinds["nan"]:
            audio, _ = _read(data)
            assert sf.info(io.BytesIO(data)).subtype == "FLOAT"
            assert np.isnan(audio).any() and np.isfinite(audio).sum() > len(audio) // 2
        else:
            audio, _ = _read(data)
            assert len(audio) > 0 and np.isfinite(audio).all()
    assert table_meta(generate("asr", "test", 10, seed=7, corrupt=6))["corrupt_rows"] != meta["corrupt_rows"]


def test_float_wav_has_no_timestamp_and_empty_wav_has_no_frames():
    a = speech.float_wav(np.array([0.5, np.nan, -0.25], np.float32), 8000)
    assert a == speech.float_wav(np.array([0.5, np.nan, -0.25], np.float32), 8000)
    assert b"PEAK" not in a
    audio, rate = _read(a)
    assert rate == 8000 and audio[0] == 0.5 and np.isnan(audio[1]) and audio[2] == -0.25
    empty = speech.empty_wav()
    assert sf.info(io.BytesIO(empty)).frames == 0 and sf.info(io.BytesIO(empty)).samplerate == speech.RATE


def test_missing_espeak_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        speech.speak(speech.Utterance("one two", "en-us", 160, 50, "flac", 16000, 1))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="corrupt"):
        generate("asr", "train", 2, seed=0, corrupt=3)
    with pytest.raises(ValueError, match="split"):
        speech.sentences("dev", 2)
    with pytest.raises(ValueError, match="container"):
        speech.encode(np.zeros(10, np.int16), 16000, "mp3")
