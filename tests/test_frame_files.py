"""Frame outputs as files: batch prediction keeps each generated motion or speech as a .npy beside its
table (read back without pickle, recomputed when deleted), the infer stage writes the files users open
(a motion's .npz, speech's 16 kHz .wav), and `OFASys.inference` hands out GeneratedMotion /
GeneratedSpeech."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from ofasys import batch_inference
from ofasys.batch_inference import (BatchInferenceConfig, _media_present, load_frames, prediction_rows,
                                    predict_to_parquet, save_frame_outputs, save_frames)
from ofasys.evaluation import SamplePrediction
from ofasys.instruction import parse_instruction
from ofasys.modalities import MODALITIES
from ofasys.modalities.audio import AUDIO_TARGET, NUM_MEL_BINS, GeneratedSpeech, raw_fbank
from ofasys.modalities.motion import DEFAULT_FRAME_SECONDS, FEATURES, FRAME_WIDTH, GeneratedMotion, read_frames

T2M = "<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip] <EOS>"
TTS = "<BOS> [TEXT:text] <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>"


def features(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((frames, FEATURES)).astype(np.float32)


def logmel(seconds: float = 0.2) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return raw_fbank(wave, 16000)


# ----------------------------------------------------------------------------- .npy files


def test_save_frames_writes_npy_and_replaces_arrays_with_paths(tmp_path):
    clip = features(4)
    outputs = {"clip": clip, "label": "one two", "box": [1.0, 2.0, 3.0, 4.0]}
    kept = save_frames(outputs, "test-000000003", tmp_path / "media")
    path = tmp_path / "media" / "test-000000003.clip.frames.npy"
    assert kept == {"clip": str(path), "label": "one two", "box": [1.0, 2.0, 3.0, 4.0]}
    assert isinstance(outputs["clip"], np.ndarray)  # the caller's dict is left alone
    assert sorted(p.name for p in (tmp_path / "media").iterdir()) == [path.name]  # no temp file left
    back = load_frames(kept["clip"])
    assert back.dtype == np.float32 and np.array_equal(back, clip)
    json.dumps(kept)  # fits the table's JSON column


def test_save_frames_overwrites_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    media = tmp_path / "media"
    save_frames({"clip": features(2, 0)}, "k", media)
    save_frames({"clip": features(3, 1)}, "k", media)
    assert np.array_equal(load_frames(str(media / "k.clip.frames.npy")), features(3, 1))

    def broken(fh, value, allow_pickle=False):
        fh.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    monkeypatch.setattr(batch_inference.np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_frames({"clip": features(5, 2)}, "k", media)
    monkeypatch.undo()
    assert np.array_equal(load_frames(str(media / "k.clip.frames.npy")), features(3, 1))  # never half written


def test_save_frames_without_arrays_writes_nothing(tmp_path):
    assert save_frames({"cap": "two", "n": 3}, "k", tmp_path / "media") == {"cap": "two", "n": 3}
    assert not (tmp_path / "media").exists()


def test_load_frames_reads_without_pickle_and_passes_other_values(tmp_path):
    evil = tmp_path / "evil.frames.npy"
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_frames(str(evil))
    assert load_frames("one two") == "one two"
    assert load_frames(None) is None
    assert load_frames([1, 2]) == [1, 2]


def test_prediction_rows_name_the_frame_file(tmp_path):
    clip = features(3)
    pred = SamplePrediction(key="test-000000000", outputs={"clip": clip}, refs={"clip": None}, tokens=[])
    [row] = prediction_rows([pred], "clip", tmp_path / "media")
    assert row["prediction"] == str(tmp_path / "media" / "test-000000000.clip.frames.npy")
    assert json.loads(row["outputs"]) == {"clip": row["prediction"]}
    assert np.array_equal(load_frames(row["prediction"]), clip)
    pa.Table.from_pylist([row])  # a path, not thousands of numbers, in the cell


def test_media_present(tmp_path):
    made = save_frames({"clip": features(2)}, "k", tmp_path)
    table = pa.Table.from_pylist([{"key": "k", "outputs": json.dumps(made)}, {"key": "j", "outputs": json.dumps({"cap": "two"})}])
    assert _media_present(table, tmp_path)
    Path(made["clip"]).unlink()
    assert not _media_present(table, tmp_path)
    assert _media_present(pa.table({"key": ["k"]}), tmp_path)  # a table without outputs names no file


def test_a_text_output_that_looks_like_a_file_name_is_not_a_missing_frame_file(tmp_path):
    table = pa.Table.from_pylist([{"key": "k", "outputs": json.dumps({"cap": "weights.npy"})}])
    assert _media_present(table, tmp_path)


class FakeTask:
    """What predict_to_parquet reads of a task's data."""

    def __init__(self, tmp_path: Path, instruction: str, n: int, manifest: dict | None = None):
        self.name, self.split, self.n = "t2m", "test", n
        self.instruction = parse_instruction(instruction)
        self.manifest = manifest or {}
        self.manifest_path = tmp_path / "manifest.json"
        self.manifest_path.write_text(json.dumps({"task": "t2m", **self.manifest}))

    def __len__(self) -> int:
        return self.n


def test_a_chunk_whose_frame_file_was_deleted_is_made_again(tmp_path, monkeypatch):
    import torch

    calls: list[list[int]] = []

    def fake_predict(model, task_data, beam_size, batch_size, indices, progress=None):
        calls.append(list(indices))
        for i in indices:
            yield SamplePrediction(key=f"test-{i:09d}", outputs={"clip": features(2 + i, seed=i)},
                                   refs={"clip": None}, tokens=[1, 2])

    monkeypatch.setattr(batch_inference, "predict", fake_predict)
    task, model = FakeTask(tmp_path, T2M, 5), torch.nn.Linear(2, 2)
    out = tmp_path / "predictions" / "t2m.parquet"
    cfg = BatchInferenceConfig(chunk_size=2, batch_size=2)
    path, preds = predict_to_parquet(model, task, out, tmp_path / "work", cfg)
    assert calls == [[0, 1], [2, 3], [4]]
    media = out.parent / "t2m"
    assert sorted(p.name for p in media.iterdir()) == [f"test-{i:09d}.clip.frames.npy" for i in range(5)]
    for i, p in enumerate(preds):
        assert p.outputs["clip"] == str(media / f"test-{i:09d}.clip.frames.npy")
        assert np.array_equal(load_frames(p.outputs["clip"]), features(2 + i, seed=i))
    assert pq.read_table(path).column("prediction").to_pylist() == [p.outputs["clip"] for p in preds]

    calls.clear()
    predict_to_parquet(model, task, out, tmp_path / "work", cfg)
    assert calls == []  # every chunk finished and its files there: nothing is generated again

    (media / "test-000000003.clip.frames.npy").unlink()
    _, preds = predict_to_parquet(model, task, out, tmp_path / "work", cfg)
    assert calls == [[2, 3]]  # only the chunk that lost a file
    assert np.array_equal(load_frames(preds[3].outputs["clip"]), features(5, seed=3))
    assert [p.key for p in preds] == [f"test-{i:09d}" for i in range(5)]


def test_save_frame_outputs_writes_what_users_open(tmp_path):
    stats = {"mean": [0.0] * FEATURES, "std": [1.0] * FEATURES, "max_steps": 9, "frame_seconds": 0.05}
    task = FakeTask(tmp_path, T2M, 3, {"frame_stats": {"clip.motion": stats}})
    saved = save_frames({"clip": features(4, 1)}, "test-000000001", tmp_path / "media")["clip"]
    paths = save_frame_outputs(task, "clip", [features(3, 0), saved, None],
                               ["test-000000000", "test-000000001", "test-000000002"], tmp_path / "files")
    assert paths == [str(tmp_path / "files" / "test-000000000.npz"), str(tmp_path / "files" / "test-000000001.npz"), None]
    with np.load(paths[1], allow_pickle=False) as npz:
        assert np.array_equal(npz["features"], features(4, 1))
        assert npz["frames"].shape == (4, FRAME_WIDTH) and float(npz["frame_seconds"]) == 0.05
    speech = FakeTask(tmp_path, TTS, 1)
    [wav] = save_frame_outputs(speech, "wav", [logmel()], ["test-000000000"], tmp_path / "speech")
    assert wav == str(tmp_path / "speech" / "test-000000000.wav")
    assert sf.info(wav).samplerate == 16000


# ----------------------------------------------------------------------------- the modalities' files


def test_motion_save_output_writes_an_npz_of_features_and_frames(tmp_path):
    clip = features(6, 2)
    path = MODALITIES["MOTION"].save_output(clip, tmp_path / "test-000000001.clip", {"frame_seconds": 0.1})
    assert path == tmp_path / "test-000000001.clip.npz"  # the key's dots are kept, not taken for a suffix
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"features", "frames", "frame_seconds"}
        assert np.array_equal(npz["features"], clip)
        assert npz["frames"].shape == (6, FRAME_WIDTH)
        np.testing.assert_allclose(npz["frames"][:-1, 0], 0.1)
    default = MODALITIES["MOTION"].save_output(clip, tmp_path / "d", {})
    with np.load(default, allow_pickle=False) as npz:
        assert float(npz["frame_seconds"]) == pytest.approx(DEFAULT_FRAME_SECONDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "test-000000001.clip.npz"]  # nothing else


def test_audio_target_save_output_writes_a_16khz_wav(tmp_path):
    frames = logmel(0.2)
    path = AUDIO_TARGET.save_output(frames, tmp_path / "test-000000000", {})
    assert path == tmp_path / "test-000000000.wav"
    info = sf.info(path)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert info.frames == 400 + 160 * (len(frames) - 1)
    samples, _ = sf.read(path, dtype="float32")
    assert np.abs(samples).max() > 0.01  # speech, not silence


def test_generated_motion(tmp_path):
    clip = features(5, 3)
    motion = MODALITIES["MOTION"].typed_output(clip, {"frame_seconds": 0.04})
    assert isinstance(motion, GeneratedMotion) and motion.frame_seconds == 0.04
    assert motion.features.dtype == np.float32 and np.array_equal(motion.features, clip)
    assert motion.frames.shape == (5, FRAME_WIDTH)
    np.testing.assert_allclose(motion.frames[:-1, 0], 0.04)
    assert MODALITIES["MOTION"].typed_output(clip, {}).frame_seconds == pytest.approx(DEFAULT_FRAME_SECONDS)
    saved = motion.save(tmp_path / "clip.json")
    frames, loop = read_frames(saved)
    np.testing.assert_allclose(frames, motion.frames, atol=1e-12)
    with pytest.raises(ValueError, match="suffix"):
        motion.save(tmp_path / "clip.bvh")
    with pytest.raises(AttributeError):
        motion.frame_seconds = 1.0  # frozen


def test_generated_speech(tmp_path):
    frames = logmel(0.15)
    speech = AUDIO_TARGET.typed_output(frames.astype(np.float16), {})
    assert isinstance(speech, GeneratedSpeech) and speech.sample_rate == 16000
    assert speech.fbank.dtype == np.float32 and speech.fbank.shape == (len(frames), NUM_MEL_BINS)
    wave = speech.waveform
    assert wave is speech.waveform  # computed once
    assert wave.dtype == np.float32 and len(wave) == 400 + 160 * (len(frames) - 1)
    assert np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0.01
    path = speech.save(tmp_path / "out" / "speech.wav")
    assert sf.info(path).samplerate == 16000
    samples, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(samples, wave, atol=1 / 32768 + 1e-6)
    empty = GeneratedSpeech(np.zeros((0, NUM_MEL_BINS), np.float32))
    assert len(empty.waveform) == 0
