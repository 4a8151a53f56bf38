"""Each stage's DVC input slice changes exactly when something that stage reads changes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.params import parse_params
from pipeline.stage_inputs import media_columns, stage_slices

ROOT = Path(__file__).resolve().parents[2]
TASKS = tuple(yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())["tasks"])


def _fingerprint(name: str) -> dict:
    return {"files": {}, "task": name}  # the source data is not what these tests are about


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())


def _changed(raw: dict, edit) -> set[str]:
    before = stage_slices(parse_params(raw), _fingerprint)
    other = copy.deepcopy(raw)
    edit(other)
    after = stage_slices(parse_params(other), _fingerprint)
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def _each(prefix: str) -> set[str]:
    return {f"{prefix}/{t}.json" for t in TASKS}


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["tasks"]["vqa"].update(weight=0.9), {"train.json"}),
    (lambda r: r["train"].update(lr=0.01), {"train.json"}),
    (lambda r: r["train"].update(max_steps=99), {"train.json"}),
    (lambda r: r["tasks"]["vqa"].update(metric="bleu4"), {"evaluate.json"}),
    (lambda r: r["evaluate"].update(beam_size=4), {"evaluate.json"}),
    (lambda r: r["infer"].update(batch_size=3), {"infer.json"}),
    (lambda r: r["tracking"].update(experiment="x"), {"train.json", "evaluate.json", "infer.json"}),
    (lambda r: r["materialise"].update(shard_samples=7), _each("materialise")),
    # byte-identical shards for any number of worker processes: nothing re-runs
    (lambda r: r["materialise"].update(num_workers=3), set()),
    (lambda r: r["model"].update(max_positions=512), _each("materialise") | {"train.json"}),
    (lambda r: r["model"].update(d_model=64), {"train.json"}),
    (lambda r: r["tasks"]["vqa"].update(image_size=48), {"materialise/vqa.json"}),
    (lambda r: r["tasks"]["vqa"]["source"].update(train=50), {"ingest/vqa.json", "materialise/vqa.json"}),
    # a reworded prompt: the vocabulary reads slot values, never prompt wording
    (lambda r: r["tasks"]["vqa"].update(instruction="[IMAGE:img] <BOS> answer: [TEXT:question] <EOS> -> "
                                                    "<BOS> [TEXT:answer,closed_set] <EOS>"),
     {"materialise/vqa.json"}),
    # a text slot's attributes are part of what the task gives the vocabulary (vocab_text re-runs, cheaply)
    (lambda r: r["tasks"]["infill"].update(instruction=r["tasks"]["infill"]["instruction"].replace("0.3", "0.5")),
     {"materialise/infill.json", "vocab_text/infill.json"}),
    # the vocabulary's settings: materialise re-runs through its `assets` dep when the vocabulary changes
    (lambda r: r["assets"].update(num_bins=32), {"assets.json"}),
    (lambda r: r["assets"].update(vocab_tasks=["caption", "infill"]),
     {"assets.json"} | _each("vocab_text") - {"vocab_text/caption.json", "vocab_text/infill.json"}),
    (lambda r: r.update(seed=8), _each("ingest") | _each("materialise") | {"train.json"}),
])
def test_a_params_edit_changes_exactly_the_slices_of_the_stages_that_read_it(raw, edit, expected):
    assert _changed(raw, edit) == expected


def test_adding_a_task_outside_the_vocabulary_tasks_changes_no_existing_slice(raw):
    raw["assets"]["vocab_tasks"] = list(TASKS)
    before = stage_slices(parse_params(raw), _fingerprint)
    other = copy.deepcopy(raw)
    other["tasks"]["captions_again"] = copy.deepcopy(raw["tasks"]["caption"])
    after = stage_slices(parse_params(other), _fingerprint)
    assert set(after) - set(before) == {"ingest/captions_again.json", "vocab_text/captions_again.json",
                                        "vq_images/captions_again.json", "materialise/captions_again.json"}
    assert after["vocab_text/captions_again.json"] == {"in_vocab": False}
    assert {k for k in before if before[k] != after[k]} == {"train.json", "evaluate.json"}


def test_without_vocab_tasks_every_task_feeds_the_vocabulary(raw):
    slices = stage_slices(parse_params(raw), _fingerprint)
    assert slices["assets.json"]["vocab_tasks"] == sorted(TASKS)
    assert slices["vocab_text/vqa.json"] == {"in_vocab": True, "slots": {
        "text": {"answer": {"modality": "TEXT", "attrs": {"closed_set": True}},
                 "question": {"modality": "TEXT", "attrs": {}}},
        "phones": {}}}
    assert slices["vocab_text/phones.json"]["slots"]["phones"] == {
        "text": {"modality": "PHONE", "attrs": {"preprocess": "text_phone"}}}


def test_defaults_fill_a_missing_optional_section(raw):
    without = {k: v for k, v in raw.items() if k != "materialise"}
    slices = stage_slices(parse_params(without), _fingerprint)
    assert slices["materialise/vqa.json"]["materialise"] == {"shard_samples": 1000, "reject_budget": 0.01}


def test_source_data_fingerprint_is_in_the_reading_stages_only(raw):
    params = parse_params(raw)
    before = stage_slices(params, _fingerprint)
    after = stage_slices(params, lambda name: {"files": {"x": name == "vqa"}})
    assert {k for k in before if before[k] != after[k]} == _each("ingest") | _each("materialise")


def test_media_fingerprint_reruns_materialise_not_ingest(raw):
    params = parse_params(raw)
    before = stage_slices(params, lambda name: {"files": [], "media": {"sha256": "a"}})
    after = stage_slices(params, lambda name: {"files": [], "media": {"sha256": "b" if name == "vqa" else "a"}})
    assert {k for k in before if before[k] != after[k]} == {"materialise/vqa.json"}


def test_media_columns_are_the_media_slots():
    assert media_columns("[IMAGE:img] <BOS> [TEXT:q] <EOS> -> [BOX:region]") == ["img"]
    assert media_columns("[TEXT:t] -> [TEXT:u]") == []
