"""Repeat groups: `( [BOX:boxes] [TEXT:labels,closed_set] )*` stores list columns (any number of
objects, none included), trains on one box-label pair per object, and generates step by step: 4
bins, then a label, then another object or <eos>; unequal lists are rejected rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.members import plan_members
from ofasys.data.rejects import read_rejects
from ofasys.data.task_data import ShardTaskData
from ofasys.instruction import parse_instruction

DETECT = "[IMAGE:img] <BOS> what are the objects? <EOS> -> <BOS> ( [BOX:boxes] [TEXT:labels,closed_set] )* <EOS>"


@pytest.fixture()
def detection(tmp_path, png, parquet, vocab_path):
    rows = {
        "img": [png(40, 20, seed=i) for i in range(5)],
        "boxes": [["0,0,20,10", "20,10,40,20"], [], ["4,2,8,6"], ["1,1,2,2", "3,3,4,4"], ["0,0,40,20"]],
        "labels": [["one", "two"], [], ["three"], ["one"], ["two"]],  # row 3: two boxes, one label
    }
    raw = {"train": parquet(tmp_path / "raw" / "train.parquet", rows)}
    report = materialise_task(MaterialiseConfig(task="detect", instruction=DETECT, raw_splits=raw, vocab_path=vocab_path,
                                                out_dir=tmp_path / "shards", reject_budget=0.5, progress=False))
    return report


def test_group_columns_are_list_members_named_with_their_group():
    members = plan_members(parse_instruction(DETECT))
    assert [(m.name, m.group) for m in members] == [
        ("img.image", None), ("boxes.box", ("boxes", "labels")), ("labels.text", ("boxes", "labels"))]


def test_lists_of_any_length_are_stored_and_unequal_ones_rejected(detection, vocab):
    assert detection.splits["train"].num_samples == 4
    (reject,) = read_rejects(detection.rejects_path)
    assert reject.row == 3 and reject.column == "boxes"
    assert "different numbers of elements (boxes 2, labels 1)" in reject.reason
    manifest = json.loads(detection.manifest_path.read_text())
    assert manifest["closed_sets"] == {"labels": ["one", "three", "two"]}
    data = ShardTaskData(detection.manifest_path, "train", vocab)
    first, empty = data.get(0), data.get(1)
    assert first.meta["meta"]["boxes"]["repeat_lengths"] == [4, 4]
    assert first.meta["refs"]["boxes"] == [{"boxes": [0.0, 0.0, 20.0, 10.0], "labels": "one"},
                                           {"boxes": [20.0, 10.0, 40.0, 20.0], "labels": "two"}]  # as decoded
    assert first.meta["refs"]["labels"] == ["one", "two"]
    assert empty.arrays["boxes.box"].shape == (0,) and empty.meta["meta"]["boxes"]["repeat_lengths"] == []


def test_training_sequences_hold_each_object_box_then_label(detection, vocab):
    data = ShardTaskData(detection.manifest_path, "train", vocab)
    batch = data.collator.collate([data.get(0), data.get(1)], np.random.default_rng(0), train=False)
    seq = batch.target[0][batch.loss_mask[0]].tolist()
    one, two = vocab.encode_text("one"), vocab.encode_text("two")
    bins = data.get(0).arrays["boxes.box"].tolist()
    assert seq == bins[:4] + one + bins[4:] + two + [vocab.eos]
    assert batch.target[1][batch.loss_mask[1]].tolist() == [vocab.eos]  # no objects: just <eos>


def test_generation_walks_box_label_then_another_object_or_eos(detection, vocab):
    data = ShardTaskData(detection.manifest_path, "train", vocab)
    sample = data.get(0)
    plan = data.plan(sample)
    bins, labels = set(vocab.bin_range), {vocab.encode_text(w)[0] for w in ("one", "two", "three")}
    generated: list[int] = []
    assert set(plan.allowed(generated)) == bins | {vocab.eos}  # an object, or none at all
    box = [vocab.bin_id(b) for b in (0, 3, 15, 15)]
    generated.append(box[0])
    for t in box[1:]:
        assert set(plan.allowed(generated)) == bins  # the rest of the box: bins only
        generated.append(t)
    assert set(plan.allowed(generated)) == labels
    generated += vocab.encode_text("three")
    assert set(plan.allowed(generated)) == bins | {vocab.eos}  # the label is complete: next object or the end
    generated += box
    generated += vocab.encode_text("one")
    generated.append(vocab.eos)
    assert plan.done(generated)
    decoded = plan.decode(generated, sample.meta, logprobs=[np.log(0.5)] * 5 + [0.0] * 5 + [0.0])
    objects = decoded["boxes"]
    assert [o["labels"] for o in objects] == ["three", "one"] and decoded["labels"] == ["three", "one"]
    assert objects[0]["boxes"] == pytest.approx([0.0, 20 * 3 / 15, 40.0, 20.0])  # bins back to the image's pixels
    assert objects[0]["score"] == pytest.approx(0.5) and objects[1]["score"] == pytest.approx(1.0)
    searched = generated[:-1]  # what the search returns: the <eos> that ended it left out
    assert plan.decode(searched, sample.meta)["labels"] == ["three", "one"]
    assert plan.decode([vocab.eos], sample.meta) == {"boxes": [], "labels": []}
    assert plan.decode([], sample.meta) == {"boxes": [], "labels": []}
    assert plan.decode(box[:2], sample.meta)["boxes"] == []  # an object cut short is left out
