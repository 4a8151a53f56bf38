"""Image codes at params load: a task storing images as VQ codes needs `assets.vq`, whose codebook is
the vocabulary's code block and whose grid is what a slot's `length=` must say; a given VQ file must
exist and agree. Each mistake is one ParamsError naming the key and the fix, before any work."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.params import ParamsError, parse_params
from pipeline.params_checks import effective_vq_config, vq_task_names
from pipeline.stage_inputs import stage_slices
from tests.support.vq import TINY_VQ, save_tiny

ROOT = Path(__file__).resolve().parents[2]
T2I = '<BOS> what does " [TEXT:cap] " look like? <EOS> -> <BOS> [IMAGE:img,preprocess=image_vqgan] <EOS>'


@pytest.fixture()
def raw() -> dict:
    raw = yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())
    raw["tasks"]["t2i"] = {"instruction": T2I, "metric": "code_accuracy",
                           "source": {"kind": "demo", "generator": "text_to_image", "train": 8, "valid": 2, "test": 2}}
    raw["assets"]["num_codes"] = 64
    raw["assets"]["vq"] = {"grid": 4, "image_size": 16, "codebook_size": 64}
    return raw


def _error(raw) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    return str(err.value)


def test_a_coded_task_loads_and_the_vq_learns_from_the_coded_tasks(raw):
    params = parse_params(raw)
    assert vq_task_names(params) == ("t2i",)
    assert effective_vq_config(params).grid == 4 and effective_vq_config(params).seed == raw["seed"]


def test_codes_without_a_vq_tokenizer_name_the_slot_and_the_fix(raw):
    del raw["assets"]["vq"]
    message = _error(raw)
    assert message.startswith("tasks.t2i.instruction: [IMAGE:img,preprocess=image_vqgan]") and "add assets.vq" in message


def test_the_code_block_must_be_the_codebook(raw):
    raw["assets"]["num_codes"] = 0
    assert _error(raw) == ("assets.num_codes: 0, but the VQ tokenizer has 64 codes; set assets.num_codes: 64 "
                           "(the vocabulary holds one id per code)")


def test_a_slot_length_must_be_the_grids_codes(raw):
    raw["tasks"]["t2i"]["instruction"] = T2I.replace("image_vqgan]", "image_vqgan,length=64]")
    message = _error(raw)
    assert "length=64" in message and "4 x 4 = 16 codes" in message and "write length=16" in message
    raw["tasks"]["t2i"]["instruction"] = T2I.replace("image_vqgan]", "image_vqgan,length=16]")
    parse_params(raw)


@pytest.mark.parametrize("vq, expected", [
    ({"grid": 5, "image_size": 16}, "assets.vq: image_size / grid must be a power of two"),
    ({"gird": 4}, "assets.vq.gird: unknown key; did you mean 'grid'?"),
    ({"tasks": ["t2j"]}, "assets.vq.tasks: 't2j' is not a task; did you mean 't2i'?"),
    ({"tasks": ["infill"]}, "assets.vq.tasks: task 'infill' has no IMAGE column"),
    ({"steps": 0}, "assets.vq: steps must be a positive integer"),
    ({"grid": "8"}, "assets.vq.grid: expected an integer"),
    ({"seed": 3}, "assets.vq.seed: the VQ tokenizer is seeded by the top-level `seed:`"),
])
def test_vq_settings_are_checked_with_their_key(raw, vq, expected):
    raw["assets"]["vq"].update(vq)
    assert _error(raw).startswith(expected)


def test_a_given_vq_file_must_exist_and_agree_with_what_is_written_beside_it(raw, tmp_path):
    raw["assets"]["vq"] = {"path": str(tmp_path / "nope.safetensors")}
    message = _error(raw)
    assert message.startswith("assets.vq.path: file not found") and "remove path to train one" in message
    path = tmp_path / "vq.safetensors"
    save_tiny(path)
    raw["assets"]["vq"] = {"path": str(path)}
    assert _error(raw).startswith(f"assets.num_codes: 64, but the VQ tokenizer has {TINY_VQ['codebook_size']} codes")
    raw["assets"]["num_codes"] = TINY_VQ["codebook_size"]
    params = parse_params(raw)
    assert effective_vq_config(params).grid == TINY_VQ["grid"]
    raw["assets"]["vq"]["grid"] = 8
    assert _error(raw).startswith("assets.vq.grid: 8, but the VQ file at assets.vq.path has grid 4")
    raw["assets"]["vq"] = {"path": str(path)}
    path.write_bytes(b"not a vq file at all")
    assert _error(raw).startswith("assets.vq.path: ")


def test_the_vq_slices_change_only_with_what_the_vq_reads(raw):
    """Retraining the VQ (steps) changes its slice alone, not the vocabulary's; adding a task without
    codes adds its own empty vq_images slice and changes no VQ slice (so no retraining)."""
    fingerprint = lambda name: {"rows": name}  # noqa: E731 - the content fingerprint is not the point here
    before = stage_slices(parse_params(raw), fingerprint)
    assert before["vq_images/t2i.json"]["in_vq"] and not before["vq_images/caption.json"]["in_vq"]
    steps = copy.deepcopy(raw)
    steps["assets"]["vq"]["steps"] = 7
    after = stage_slices(parse_params(steps), fingerprint)
    assert {k for k in before if before[k] != after[k]} == {"vq.json"}
    more = copy.deepcopy(raw)
    more["tasks"]["captions_again"] = copy.deepcopy(raw["tasks"]["caption"])
    after = stage_slices(parse_params(more), fingerprint)
    vq_slices = [k for k in before if k.startswith("vq")]
    assert len(vq_slices) == len(raw["tasks"]) + 1 and all(before[k] == after[k] for k in vq_slices)
    assert after["vq_images/captions_again.json"] == {"in_vq": False}
