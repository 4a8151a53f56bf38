"""End to end, frame outputs: `dvc repro` materialises text-to-motion and text-to-speech targets with
their train statistics, trains the MOTION diffusion head and the AUDIO head beside a speech
recognition task, evaluates motion_match and tts_wer (the run's own recogniser transcribing the
generated speech) beside their baselines, writes each generated clip as .npz and each utterance as
.wav, and the Python API returns them as a playable motion and a waveform."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.e2e.test_pipeline import ROOT, _fresh_repro

pytestmark = pytest.mark.slow

T2M = '<BOS> how does a person " [TEXT:label] " move? <EOS> -> <BOS> [MOTION:clip,sample_rate=2,min_length=16] <EOS>'
TTS = '<BOS> what does " [TEXT:text] " sound like? <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("frames")
    return _fresh_repro(work, ROOT / "tests/e2e/params_frames.yaml")


def test_manifests_record_the_train_statistics_the_frames_are_normalised_by(run):
    work, _, _ = run
    motion = json.loads((work / "data/shards/text_to_motion/manifest.json").read_text())
    stats = motion["frame_stats"]["clip.motion"]
    assert len(stats["mean"]) == len(stats["std"]) == 82 and min(stats["std"]) >= 1e-3
    assert 16 <= stats["max_steps"] <= 45 and stats["frame_seconds"] > 0
    speech = json.loads((work / "data/shards/tts/manifest.json").read_text())
    assert len(speech["frame_stats"]["wav.audio_tgt"]["mean"]) == 320
    config = json.loads((work / "checkpoints/final/config.json").read_text())
    assert set(config["model"]["output_heads"]) == {"AUDIO", "MOTION"}
    assert config["tasks"]["tts"]["frame_stats"] == speech["frame_stats"]


def test_frame_metrics_sit_beside_their_baselines(run):
    work, _, _ = run
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    motion = metrics["text_to_motion"]
    assert motion["metric"] == "motion_match" and 0 <= motion["motion_match"] <= 1
    assert {"motion_match_baseline", "same_label_distance", "other_label_distance"} <= set(motion)
    speech = metrics["tts"]
    assert speech["metric"] == "tts_wer" and speech["tts_wer"] >= 0 and not speech["higher_is_better"]
    assert {"tts_wer_baseline", "fbank_l1", "fbank_l1_baseline", "tts_wer_reference"} <= set(speech)
    assert speech["fbank_l1"] > 0 and speech["num_samples"] == 4


def test_batch_inference_writes_each_clip_as_npz_and_each_utterance_as_wav(run):
    work, _, _ = run
    rows = pq.read_table(work / "predictions/text_to_motion.parquet").to_pylist()
    assert len(rows) == 6
    for r in rows:
        with np.load(work / r["motion"], allow_pickle=False) as clip:
            assert clip["features"].shape[1] == 82 and clip["frames"].shape == (len(clip["features"]), 44)
        assert np.load(work / r["prediction"], allow_pickle=False).shape[1] == 82  # the raw frames
        assert r["score"] in (0.0, 1.0)
    rows = pq.read_table(work / "predictions/tts.parquet").to_pylist()
    assert len(rows) == 4
    for r in rows:
        info = sf.info(work / r["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.frames > 0
        assert np.load(work / r["prediction"], allow_pickle=False).shape[1] == 80


def test_the_python_api_returns_a_playable_motion_and_a_waveform(run, tmp_path):
    from ofasys.inference import OFASys
    from ofasys.modalities.motion import read_frames

    work, _, _ = run
    model = OFASys.from_pretrained(work / "checkpoints/final")
    clip = model.inference(T2M, data={"label": "cartwheel"}).motion
    assert clip.features.shape[1] == 82 and clip.frames.shape == (len(clip.features), 44)
    frames, _ = read_frames(clip.save(tmp_path / "clip.json"))  # DeepMimic's own format reads back
    assert frames.shape == clip.frames.shape
    again = model.inference(T2M, data={"label": "cartwheel"}).motion
    assert np.array_equal(clip.features, again.features)  # the sampling noise is keyed, not drawn
    speech = model.inference(TTS, data={"text": "three seven one"}).audio
    assert speech.sample_rate == 16000 and speech.fbank.shape[1] == 80
    assert speech.waveform.ndim == 1 and np.abs(speech.waveform).max() <= 1.0
    assert sf.info(speech.save(tmp_path / "speech.wav")).frames == len(speech.waveform)
