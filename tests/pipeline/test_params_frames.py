"""params.yaml for frame outputs (text-to-motion, text-to-speech): what their metrics need is checked at
load time, `model.output_heads` is validated with the key named, and the run's model gets an output head
for every generated frame output and an adaptor only for what the encoder reads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline import run_config
from pipeline.params import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[2]

T2M = '<BOS> how does a person " [TEXT:label] " move? <EOS> -> <BOS> [MOTION:clip,sample_rate=2,min_length=16] <EOS>'
TTS = '<BOS> what does " [TEXT:text] " sound like? <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>'
MOTION_LABEL = "[MOTION:clip] <BOS> what is the person doing? <EOS> -> <BOS> [TEXT:label,closed_set] <EOS>"


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_frames.yaml").read_text())


@pytest.fixture()
def tiny() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())


def test_the_frames_params_load(raw):
    params = parse_params(raw)
    assert {params.tasks["tts"].metric, params.tasks["text_to_motion"].metric} == {"tts_wer", "motion_match"}


def test_tts_wer_without_a_speech_recognition_task_names_the_task_and_the_fix(raw):
    del raw["tasks"]["asr"]
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert message.startswith("tasks.tts.metric: tts_wer")
    assert "AUDIO input and metric wer" in message and "add one, or use fbank_l1" in message


def test_an_audio_task_scored_otherwise_is_not_a_recogniser(raw):
    raw["tasks"]["asr"]["metric"] = "cer"
    with pytest.raises(ParamsError, match=r"tasks\.tts\.metric: tts_wer .*add one, or use fbank_l1"):
        parse_params(raw)


def test_a_wer_task_without_audio_input_is_not_a_recogniser(raw):
    raw["tasks"]["asr"]["instruction"] = "<BOS> [TEXT:text] <EOS> -> <BOS> [TEXT:text] <EOS>"
    with pytest.raises(ParamsError, match=r"tasks\.tts\.metric: tts_wer"):
        parse_params(raw)


def test_fbank_l1_needs_no_recogniser(raw):
    del raw["tasks"]["asr"]
    raw["tasks"]["tts"]["metric"] = "fbank_l1"
    assert parse_params(raw).tasks["tts"].metric == "fbank_l1"


def test_motion_match_needs_a_text_input(raw):
    raw["tasks"]["text_to_motion"]["instruction"] = "<BOS> move like a person <EOS> -> <BOS> [MOTION:clip] <EOS>"
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert message.startswith("tasks.text_to_motion.metric: motion_match")
    assert "no TEXT input" in message and "add one" in message


def test_tts_wer_needs_a_text_input_too(raw):
    raw["tasks"]["tts"]["instruction"] = "<BOS> say something <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>"
    with pytest.raises(ParamsError, match=r"tasks\.tts\.metric: tts_wer scores each output against the text"):
        parse_params(raw)


@pytest.mark.parametrize("task,metric,fits", [
    ("tts", "motion_match", "tts_wer"),
    ("text_to_motion", "fbank_l1", "motion_match"),
    ("asr", "tts_wer", "wer"),
])
def test_frame_metrics_on_the_wrong_output_are_refused(raw, task, metric, fits):
    raw["tasks"][task]["metric"] = metric
    with pytest.raises(ParamsError, match=rf"tasks\.{task}\.metric: {metric} scores .*{fits}"):
        parse_params(raw)


@pytest.mark.parametrize("edit,message", [
    (lambda h: h["MOTION"].update(sampling_steps=0), r"output_heads\.MOTION: sampling_steps must be positive"),
    (lambda h: h["MOTION"].update(kernel_size=2), r"output_heads\.MOTION: kernel_size must be a positive odd"),
    (lambda h: h["AUDIO"].update(postnet_layers=0), r"output_heads\.AUDIO: postnet_layers must be positive"),
    (lambda h: h["MOTION"].update(sampling_stepz=3), r"output_heads\.MOTION: .*sampling_stepz: unknown key; did you mean 'sampling_steps'"),
    (lambda h: h.update(TEXT={}), r"output_heads\.TEXT: no such output head; modalities with one: \['AUDIO', 'MOTION'\]"),
    (lambda h: h.update(MOTION=3), r"output_heads\.MOTION: must be a mapping"),
])
def test_bad_output_head_settings_name_the_key(raw, edit, message):
    edit(raw["model"]["output_heads"])
    with pytest.raises(ParamsError, match=rf"^model: {message}"):
        parse_params(raw)


def test_model_config_has_an_output_head_per_generated_frame_output(raw):
    config = run_config.model_config(parse_params(raw), vocab_size=400)
    assert set(config.output_heads) == {"MOTION", "AUDIO"}
    assert config.output_head("MOTION").sampling_steps == 4 and config.output_head("MOTION").hidden == 32
    assert config.output_head("AUDIO").hidden == 32
    assert "MOTION" not in config.adaptors  # generated, never read
    assert "AUDIO" in config.adaptors  # the recogniser reads speech


def test_generated_speech_alone_adds_no_audio_adaptor(raw):
    del raw["tasks"]["asr"]
    raw["tasks"]["tts"]["metric"] = "fbank_l1"
    del raw["model"]["output_heads"]
    params = parse_params(raw)
    assert run_config.frame_output_modalities(params) == ["AUDIO", "MOTION"]
    assert run_config.embedded_modalities(params) == []
    config = run_config.model_config(params, vocab_size=400)
    assert config.output_heads == {"AUDIO": {}, "MOTION": {}}  # defaults when params set none
    assert "AUDIO" not in config.adaptors and "MOTION" not in config.adaptors


def test_motion_read_gets_an_adaptor_and_no_head(tiny):
    tiny["tasks"] = {"motion_label": {
        "instruction": MOTION_LABEL, "weight": 1.0, "metric": "accuracy",
        "source": {"kind": "demo", "generator": "motion_label", "train": 8, "valid": 2, "test": 2}}}
    tiny["infer"]["tasks"] = ["motion_label"]
    params = parse_params(tiny)
    config = run_config.model_config(params, vocab_size=400)
    assert "MOTION" in config.adaptors and config.output_heads == {}
    assert run_config.frame_output_modalities(params) == []


def test_no_frame_outputs_no_heads(tiny):
    config = run_config.model_config(parse_params(tiny), vocab_size=400)
    assert config.output_heads == {}
    assert "AUDIO" in config.adaptors  # asr and phones read speech


def test_motion_on_both_sides_gets_both(tiny):
    tiny["tasks"] = {"continue": {
        "instruction": "[MOTION:clip] <BOS> go on <EOS> -> <BOS> [MOTION:clip] <EOS>", "weight": 1.0,
        "metric": "motion_match",
        "source": {"kind": "demo", "generator": "motion_label", "train": 8, "valid": 2, "test": 2}}}
    tiny["infer"]["tasks"] = ["continue"]
    with pytest.raises(ParamsError, match="no TEXT input"):  # motion_match scores against a text
        parse_params(copy.deepcopy(tiny))
    tiny["tasks"]["continue"]["instruction"] = "[MOTION:clip] <BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip] <EOS>"
    config = run_config.model_config(parse_params(tiny), vocab_size=400)
    assert "MOTION" in config.adaptors and set(config.output_heads) == {"MOTION"}


@pytest.mark.parametrize("task,instruction,fix", [
    ("tts", TTS.replace(",preprocess=audio_tgt_fbank", ""), "write preprocess=audio_tgt_fbank on the output slot"),
    ("text_to_motion", T2M[: -len(" <EOS>")], "write <EOS> after it"),
    ("asr", "[AUDIO:wav,preprocess=audio_tgt_fbank] <BOS> what does the speech say? <EOS> -> <BOS> [TEXT:text] <EOS>",
     "remove preprocess= from the input slot"),
    ("tts", TTS + " [MOTION:clip] <EOS>", "generate one of them per task"),
])
def test_a_frame_output_materialisation_cannot_store_fails_when_params_load(raw, task, instruction, fix):
    raw["tasks"][task]["instruction"] = instruction
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert str(err.value).startswith(f"tasks.{task}.instruction: ") and fix in str(err.value)
