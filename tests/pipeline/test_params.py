"""params.yaml validation: typos fail at load time with the key path and a suggestion."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.params import ParamsError, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())


def test_committed_params_load():
    params = load_params(ROOT / "params.yaml")
    assert set(params.tasks) == {"caption", "grounding", "vqa", "infill"}
    assert params.infer.task in params.tasks


def test_unknown_task_key_names_path_and_suggests(raw):
    raw["tasks"]["caption"]["wieght"] = 0.5
    with pytest.raises(ParamsError, match=r"tasks\.caption\.wieght: unknown key; did you mean 'weight'"):
        parse_params(raw)


def test_unknown_section_suggests(raw):
    raw["trian"] = {}
    with pytest.raises(ParamsError, match=r"trian: unknown section; did you mean 'train'"):
        parse_params(raw)


def test_bad_metric_and_weight(raw):
    bad = copy.deepcopy(raw)
    bad["tasks"]["vqa"]["metric"] = "f1"
    with pytest.raises(ParamsError, match="tasks.vqa.metric"):
        parse_params(bad)
    raw["tasks"]["vqa"]["weight"] = -1
    with pytest.raises(ParamsError, match="tasks.vqa.weight"):
        parse_params(raw)


def test_source_errors_are_prefixed_with_the_task(raw):
    raw["tasks"]["infill"]["source"] = {"kind": "file", "path": "https://example.org/x.parquet"}
    with pytest.raises(ParamsError, match=r"^tasks\.infill\.source"):
        parse_params(raw)


def test_infer_task_must_exist(raw):
    raw["infer"]["task"] = "nope"
    with pytest.raises(ParamsError, match="infer.task"):
        parse_params(raw)


def test_task_hash_changes_only_with_what_shapes_the_shards(raw):
    base = parse_params(raw)
    other = copy.deepcopy(raw)
    other["evaluate"]["batch_size"] = 3
    other["tasks"]["caption"]["weight"] = 0.123
    other["tasks"]["caption"]["metric"] = "accuracy"
    assert parse_params(other).task_hash("caption") == base.task_hash("caption")
    other["tasks"]["caption"]["image_size"] = 48
    assert parse_params(other).task_hash("caption") != base.task_hash("caption")


def test_flatten_gives_dotted_keys(raw):
    flat = flatten(parse_params(raw))
    assert flat["tasks.caption.source.generator"] == "caption"
    assert flat["assets.num_bins"] == 16


def test_malformed_instruction_fails_at_load_with_caret_and_fix(raw):
    raw["tasks"]["grounding"]["instruction"] = "[IMAGE:img] where? -> [BOUNDING_BOX:region]"
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert message.startswith("tasks.grounding.instruction: unknown modality 'BOUNDING_BOX'")
    assert "^" in message and "did you mean BOX?" in message
