"""params.yaml validation: typos fail at load time with the key path and a suggestion."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from pipeline import run_config
from pipeline.params import ParamsError, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())


def test_committed_params_load():
    params = load_params(ROOT / "params.yaml")
    assert set(params.tasks) == {"caption", "grounding", "vqa", "infill", "asr", "phones"}
    assert list(params.infer.tasks) == list(params.tasks)  # every task, when infer names none


def test_the_full_demo_params_add_one_task_per_remaining_modality_to_the_default_ones():
    """params-full.yaml (documented in the README) keeps the default tasks as they are declared and
    adds video, table, SQL, motion and image-generation tasks; its runs go to their own experiment and model name, so
    its champion is never compared with the six-task demo's."""
    from pipeline.demo import GENERATORS

    default, full = load_params(ROOT / "params.yaml"), load_params(ROOT / "params-full.yaml")
    assert set(full.tasks) - set(default.tasks) == {"video_caption", "table_to_text", "text_to_sql", "motion_label",
                                                    "text_to_image", "image_infill", "detection", "region_caption",
                                                    "text_to_motion", "tts"}
    assert {t.source.generator for t in full.tasks.values()} == set(GENERATORS)
    for name, task in default.tasks.items():
        assert (full.tasks[name].instruction, full.tasks[name].source) == (task.instruction, task.source)
    assert full.tracking.experiment != default.tracking.experiment
    assert full.tracking.registered_model != default.tracking.registered_model


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


@pytest.mark.parametrize("value, message", [
    (["captoin"], "assets.vocab_tasks: 'captoin' is not a task; did you mean 'caption'?"),
    ([], "assets.vocab_tasks: an empty list would train a byte-only BPE"),
    (["caption", "caption"], "assets.vocab_tasks: a task is listed twice"),
    ("caption", "assets.vocab_tasks: expected a list"),
])
def test_vocab_tasks_name_declared_tasks(raw, value, message):
    raw.setdefault("assets", {})["vocab_tasks"] = value
    with pytest.raises(ParamsError, match=f"^{re.escape(message)}"):
        parse_params(raw)


def test_vocab_tasks_default_to_every_task_and_keep_their_order_out_of_it(raw):
    assert parse_params(raw).vocab_task_names() == tuple(raw["tasks"])
    raw.setdefault("assets", {})["vocab_tasks"] = ["infill", "caption"]
    assert parse_params(raw).vocab_task_names() == ("infill", "caption")


def test_infer_tasks_must_exist_and_the_old_single_task_key_points_to_them(raw):
    raw["infer"]["tasks"] = ["grounding", "nope"]
    with pytest.raises(ParamsError, match="infer.tasks: 'nope' is not a task; tasks: caption, grounding"):
        parse_params(raw)
    raw["infer"].pop("tasks")
    raw["infer"]["task"] = "grounding"
    with pytest.raises(ParamsError, match="infer.*task.*tasks"):
        parse_params(raw)


def test_task_hash_changes_only_with_what_shapes_the_shards(raw):
    base = parse_params(raw)
    other = copy.deepcopy(raw)
    other["evaluate"]["batch_size"] = 3
    other["tasks"]["caption"]["weight"] = 0.123
    other["tasks"]["caption"]["metric"] = "accuracy"
    assert run_config.task_hash(parse_params(other), "caption") == run_config.task_hash(base, "caption")
    other["tasks"]["caption"]["image_size"] = 48
    assert run_config.task_hash(parse_params(other), "caption") != run_config.task_hash(base, "caption")


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


# --- the whole file is one typed schema, checked at load whichever stage loads it -----------------

@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["train"].update(max_step=3), r"^train\.max_step: unknown key; did you mean 'max_steps'"),
    (lambda r: r["model"].update(d_modle=64), r"^model\.d_modle: unknown key; did you mean 'd_model'"),
    (lambda r: r["train"].update(max_steps=0), r"^train\.max_steps must be positive, got 0"),
    (lambda r: r["train"].update(max_steps=-1), r"^train\.max_steps must be positive, got -1"),
    (lambda r: r["train"].update(lr="fast"), r"^train\.lr: expected a number, got 'fast'"),
    (lambda r: r["train"].update(seed=3), r"^train\.seed: the run's seed is the top-level"),
    (lambda r: r["model"].update(heads=3), r"^model: d_model=32 must be divisible by heads=3"),
    (lambda r: r["model"].update(preset="tiny-gpu"), r"^model\.preset: unknown preset 'tiny-gpu'; did you mean 'tiny-cpu'"),
    (lambda r: r["model"].update(vocab_size=9), r"^model\.vocab_size: set from the unified vocabulary"),
    (lambda r: r["tasks"]["vqa"].update(weight=float("nan")), r"^tasks\.vqa\.weight: expected a number, got nan"),
    (lambda r: r["tasks"]["vqa"].update(weight="abc"), r"^tasks\.vqa\.weight: expected a number, got 'abc'"),
    (lambda r: [t.update(weight=0) for t in r["tasks"].values()], r"^tasks: every task has weight 0"),
    (lambda r: r["tasks"]["caption"].update(image_size=0), r"^tasks\.caption\.image_size: must be between 1"),
    (lambda r: r["tasks"]["caption"].update(image_size=True), r"^tasks\.caption\.image_size: expected an integer"),
    (lambda r: r["materialise"].update(shard_samples=0), r"^materialise\.shard_samples: must be >= 1, got 0"),
    (lambda r: r["materialise"].update(num_workers=0), r"^materialise\.num_workers: must be >= 1 \(processes decoding rows\), got 0"),
    (lambda r: r["materialise"].update(num_workers=1.5), r"^materialise\.num_workers: expected an integer"),
    (lambda r: r["materialise"].update(num_workers="2"), r"^materialise\.num_workers: expected an integer"),
    (lambda r: r["materialise"].update(reject_budget=5), r"^materialise\.reject_budget: 5 is read as a fraction.*max_count: 5"),
    (lambda r: r["materialise"].update(reject_budget=-0.1), r"^materialise\.reject_budget: -0\.1 is read as a fraction"),
    (lambda r: r["materialise"].update(reject_budget={"max_rows": 5}), r"^materialise\.reject_budget\.max_rows: unknown key"),
    (lambda r: r["assets"].update(bpe_vocab_size=0), r"^assets\.bpe_vocab_size: must be >= 261"),
    (lambda r: r["assets"].update(num_bins=1), r"^assets\.num_bins: must be >= 2, got 1"),
    (lambda r: r["evaluate"].update(beam_size=0), r"^evaluate\.beam_size: must be >= 1"),
    (lambda r: r["evaluate"].update(split="tset"), r"^evaluate\.split: 'tset' is not one of train, valid, test"),
    (lambda r: r["tracking"].update(uri=""), r"^tracking\.uri: must not be empty"),
    (lambda r: r.update(seed="7"), r"^seed: expected an integer >= 0, got '7'"),
    (lambda r: r.update(train=[1, 2]), r"^train: expected a mapping of keys, got list"),
    (lambda r: r["tasks"].update(vqa="oops"), r"^tasks\.vqa: expected a mapping of keys, got str"),
    (lambda r: r["tasks"]["vqa"].pop("instruction"), r"^tasks\.vqa\.instruction: required"),
])
def test_every_user_error_names_its_key_at_load(raw, edit, expected):
    edit(raw)
    with pytest.raises(ParamsError, match=expected) as info:
        parse_params(raw)
    assert "\n" not in str(info.value)


def test_reject_budget_mapping_form_is_accepted(raw):
    raw["materialise"]["reject_budget"] = {"max_fraction": 0.05, "max_count": 3}
    assert parse_params(raw).materialise.reject_budget == {"max_fraction": 0.05, "max_count": 3}


def test_optional_sections_default(raw):
    for key in ("assets", "materialise", "model", "train", "tracking", "evaluate", "infer"):
        raw.pop(key)
    params = parse_params(raw)
    assert params.materialise.shard_samples == 1000
    assert list(params.infer.tasks) == list(raw["tasks"])  # every task
    assert run_config.train_config(params).seed == raw["seed"]
    assert run_config.model_config(params, vocab_size=500).vocab_size == 500


def test_model_and_train_configs_are_built_from_params(raw):
    params = parse_params(raw)
    assert run_config.model_config(params, vocab_size=321).d_model == 32
    assert run_config.train_config(params).max_steps == raw["train"]["max_steps"] and run_config.train_config(params).grad_accum == 2


def test_broken_yaml_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match=r"params\.yaml: params file not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("seed: 1\ntasks: [\n")
    with pytest.raises(ParamsError, match=r"params\.yaml line \d+ column \d+: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_adaptor_settings_merge_over_the_preset_and_tasks_add_their_modalities(raw):
    raw["model"] = {"preset": "base", "adaptors": {"IMAGE": {"max_grid": 16}}}
    config = run_config.model_config(parse_params(raw), vocab_size=100)
    image = config.adaptor("IMAGE")
    assert (image.stem, image.max_grid) == ("resnet101", 16)  # the preset's stem kept, one setting changed
    raw["model"] = {"preset": "tiny-cpu", "adaptors": {}}
    raw["tasks"]["caption"]["instruction"] = "[AUDIO:img] <BOS> what is said? <EOS> -> <BOS> [TEXT:cap] <EOS>"
    assert set(run_config.model_config(parse_params(raw), vocab_size=100).adaptors) == {"IMAGE", "AUDIO"}


def test_legacy_flat_image_keys_are_read_into_the_image_adaptor(raw):
    raw["model"] = {"preset": "tiny-cpu", "image_stem_channels": 24}
    assert run_config.model_config(parse_params(raw), vocab_size=100).adaptor("IMAGE").stem_channels == 24


@pytest.mark.parametrize("adaptors,message", [
    ({"IMAGE": {"stemm": "conv"}}, r"model: adaptors\.IMAGE: ImageAdaptorConfig\.stemm: unknown key; did you mean 'stem'"),
    ({"TEXT": {}}, r"model: adaptors\.TEXT: no such adaptor"),
    ({"IMAGE": 3}, r"adaptors\.IMAGE: must be a mapping"),
])
def test_bad_adaptor_settings_name_the_key(raw, adaptors, message):
    raw["model"] = {"preset": "tiny-cpu", "adaptors": adaptors}
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_a_slot_adaptor_must_be_what_the_model_builds(raw):
    raw["tasks"]["caption"]["instruction"] = ("[IMAGE:img,adaptor=image_resnet] <BOS> what does the image describe? "
                                              "<EOS> -> <BOS> [TEXT:cap] <EOS>")
    with pytest.raises(ParamsError, match=r"tasks\.caption\.instruction: \[IMAGE:img\] adaptor=image_resnet needs "
                                          r"model\.adaptors\.IMAGE\.stem in .*'resnet50'.*; set it under model\.adaptors\.IMAGE"):
        parse_params(raw)
    raw["model"] = {"preset": "tiny-cpu", "adaptors": {"IMAGE": {"stem": "resnet50"}}}
    parse_params(raw)  # now it is what the model builds


@pytest.mark.parametrize("task,metric,message", [
    ("caption", "iou_acc", r"tasks\.caption\.metric: iou_acc scores box outputs, but the scored output \[TEXT:cap\] "
                           r"is text; use one of bleu4, cider, rouge_l, exact_match, accuracy, token_accuracy, "
                           r"wer, cer, sql_em, exec_acc$"),
    ("grounding", "bleu4", r"tasks\.grounding\.metric: bleu4 scores text outputs, .*\[BOX:region\] is box; "
                           r"use one of iou_acc$"),
    ("phones", "wer", r"tasks\.phones\.metric: wer scores text outputs, .* is phones; use one of token_accuracy, per"),
    ("caption", "exec_acc", r"tasks\.caption\.metric: exec_acc needs an input that names its database .*use sql_em"),
    ("caption", "token_accuracy", r"tasks\.caption\.metric: token_accuracy's baseline copies the masked input, "
                                  r"but no input slot has mask_ratio"),
])
def test_a_metric_that_cannot_score_the_task_fails_at_load(raw, task, metric, message):
    """Caught before any work: otherwise evaluate fails (or scores nonsense) after training."""
    raw["tasks"][task]["metric"] = metric
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_execution_accuracy_loads_when_an_input_schema_names_the_database(raw):
    raw["tasks"] = {"sql": {
        "instruction": '<BOS> " [TEXT:q] " ; structured knowledge: " [STRUCT:schema,preprocess=database] " . <EOS> '
                       '-> <BOS> [TEXT:sql] <EOS>',
        "metric": "exec_acc", "source": {"kind": "demo", "generator": "text_to_sql", "train": 4, "valid": 1, "test": 1}}}
    raw.pop("infer", None)
    assert parse_params(raw).tasks["sql"].metric == "exec_acc"
    raw["tasks"]["sql"]["instruction"] = raw["tasks"]["sql"]["instruction"].replace("preprocess=database", "preprocess=table")
    with pytest.raises(ParamsError, match="exec_acc needs an input that names its database"):
        parse_params(raw)


def test_num_workers_changes_neither_stage_inputs_nor_the_shards_params_hash(raw):
    """Worker processes make the same bytes, so the manifests' params hash must not depend on them."""
    before = run_config.task_hash(parse_params(raw), "vqa")
    raw["materialise"]["num_workers"] = 4
    params = parse_params(raw)
    assert params.materialise.num_workers == 4
    assert run_config.task_hash(params, "vqa") == before
    raw["materialise"]["shard_samples"] = 7
    assert run_config.task_hash(parse_params(raw), "vqa") != before
