"""Instruction.columns/check_columns, Slot helpers and the Attrs mapping."""

from __future__ import annotations

import pytest

from ofasys.instruction import Attrs, InstructionError, Slot, parse_instruction

SRC = "[IMAGE:img] [TEXT:question] -> [TEXT:answer,closed_set] ||| [IMAGE:img] what is in it? -> ( [BOX:boxes] [TEXT:labels] )*"


def test_columns_are_ordered_and_unique_across_templates():
    assert parse_instruction(SRC).columns() == ("img", "question", "answer", "boxes", "labels")


def test_columns_skip_slots_without_column():
    assert parse_instruction("[IMAGE] [TEXT:q] -> [TEXT]").columns() == ("q",)


def test_check_columns_passes_when_all_present():
    parse_instruction(SRC).check_columns(["labels", "boxes", "answer", "question", "img", "extra"])


def test_check_columns_names_the_missing_column_at_its_slot():
    ins = parse_instruction("[IMAGE:img] what? -> [TEXT:capton]")
    with pytest.raises(InstructionError) as info:
        ins.check_columns(["img", "caption"])
    err = info.value
    assert err.column == ins.source.index("[TEXT:capton]")
    assert "'capton'" in err.message and "img, caption" in err.message
    assert "did you mean 'caption'?" in err.fix
    assert str(err).split("\n")[2] == "    " + " " * err.column + "^"


def test_check_columns_in_second_template_reports_that_template():
    ins = parse_instruction(SRC)
    with pytest.raises(InstructionError) as info:
        ins.check_columns(["img", "question", "answer", "boxes"])
    second = ins.templates[1]
    assert info.value.template == second.source
    assert info.value.column == second.source.index("[TEXT:labels]")
    assert "did you mean" not in info.value.fix  # nothing close to 'labels'


def test_check_columns_input_side_only_for_inference():
    ins = parse_instruction("[IMAGE:img] what? -> [TEXT:cap]")
    ins.check_columns(["img"], sides=("input",))
    with pytest.raises(InstructionError):
        ins.check_columns(["img"])


def test_check_columns_with_no_columns_at_all():
    with pytest.raises(InstructionError, match=r"\(no columns\)"):
        parse_instruction("[TEXT:a] -> [TEXT:b]").check_columns([])


def test_slot_helpers():
    slot = Slot("TEXT", "label", {"closed_set": True, "no_loss": True}, 3)
    assert slot.closed_set and slot.no_loss and slot.preprocess is None and slot.is_text_like
    assert slot.get("max_length") is None and slot.get("max_length", 7) == 7
    assert not Slot("IMAGE", "img", {}, 0).is_text_like
    assert Slot("IMAGE", None, {"preprocess": "image_vqgan"}, 0).is_text_like


def test_attrs_mapping_equality_hash_and_order():
    a = Attrs({"b": 1, "a": True})
    assert a == {"a": True, "b": 1} and list(a) == ["b", "a"] and len(a) == 2
    assert hash(a) == hash(Attrs([("a", True), ("b", 1)]))
    assert a["b"] == 1 and "c" not in a
    with pytest.raises(KeyError):
        a["c"]
    assert Slot("TEXT", "x", {"uncased": True}, 0) == Slot("TEXT", "x", Attrs({"uncased": True}), 0)
