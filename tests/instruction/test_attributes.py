"""The attribute table: declared once, typed, ranged, and applied where it means something."""

from __future__ import annotations

import pytest

from ofasys.instruction import ATTRIBUTES, MODALITIES, InstructionError, parse_instruction
from ofasys.instruction.attributes import (
    ALL, CHOICE, FLAG, FLOAT, INT, INPUT, OUTPUT, STR, AttributeProblem, check_slot,
)
from ofasys.instruction.modalities import VQ_IMAGE, slot_kinds

OFASYS_ATTRIBUTES = {
    "no_loss", "closed_set", "mask_ratio", "noise_ratio", "max_length", "min_length", "uncased",
    "no_punctuation", "preprocess", "adaptor", "add_bos", "add_eos", "disable_auto_boseos", "length",
}


def test_every_ofasys_attribute_is_declared_once_and_well_formed():
    assert OFASYS_ATTRIBUTES <= set(ATTRIBUTES)
    for name, spec in ATTRIBUTES.items():
        assert spec.name == name
        assert spec.type in (FLAG, INT, FLOAT, STR, CHOICE)
        assert spec.modalities and spec.modalities <= ALL
        assert spec.sides and spec.sides <= {INPUT, OUTPUT}
        assert len(spec.doc) > 20
        if spec.type != FLAG:
            spec.coerce(spec.example)  # the example shown in fixes is itself valid
        if spec.type == CHOICE:
            assert ("default", ALL) in spec.choices


@pytest.mark.parametrize(
    "name,type_,lo,hi",
    [
        ("mask_ratio", FLOAT, 0, 1), ("noise_ratio", FLOAT, 0, 1), ("max_length", INT, 1, None),
        ("min_length", INT, 0, None), ("length", INT, 1, None), ("sample_rate", INT, 1, None),
    ],
)
def test_types_and_ranges(name, type_, lo, hi):
    spec = ATTRIBUTES[name]
    assert (spec.type, spec.min_value, spec.max_value) == (type_, lo, hi)
    assert spec.coerce(str(lo)) == lo
    with pytest.raises(AttributeProblem):
        spec.coerce(str(lo - 1))
    if hi is not None:
        assert spec.coerce(str(hi)) == hi
        with pytest.raises(AttributeProblem):
            spec.coerce(str(hi + 0.5))


@pytest.mark.parametrize("name", ["no_loss", "closed_set", "uncased", "no_punctuation", "add_bos", "add_eos", "disable_auto_boseos"])
def test_flags(name):
    spec = ATTRIBUTES[name]
    assert spec.type == FLAG and spec.coerce(None) is True
    with pytest.raises(AttributeProblem, match="takes no value"):
        spec.coerce("true")


@pytest.mark.parametrize("raw", ["1_000", " 7", "7 ", "0x10", "٣", "1e3", "", "3.0", "--1"])
def test_int_rejects_what_python_int_would_bend(raw):
    with pytest.raises(AttributeProblem):
        ATTRIBUTES["max_length"].coerce(raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "1e-1", "0.1.2", ".", "1_0", ""])
def test_float_rejects_non_decimals(raw):
    with pytest.raises(AttributeProblem):
        ATTRIBUTES["mask_ratio"].coerce(raw)


def test_valued_attribute_without_value():
    with pytest.raises(AttributeProblem, match="needs a value"):
        ATTRIBUTES["max_length"].coerce(None)


@pytest.mark.parametrize(
    "name,kinds",
    [
        ("mask_ratio", {"TEXT", "STRUCT", "PHONE", "IMAGE", VQ_IMAGE}),
        ("noise_ratio", {"TEXT", "STRUCT", "PHONE"}),
        ("uncased", {"TEXT", "STRUCT", "CATEGORY"}),
        ("no_punctuation", {"TEXT", "STRUCT", "CATEGORY"}),
        ("closed_set", {"TEXT", "CATEGORY"}),
        ("no_loss", {"TEXT", "BOX", "STRUCT", "PHONE", "CATEGORY", VQ_IMAGE}),
        ("add_bos", {"TEXT", "BOX", "STRUCT", "PHONE", "CATEGORY", VQ_IMAGE}),
        ("max_length", {"TEXT", "STRUCT", "PHONE", "AUDIO", "VIDEO", "MOTION"}),
        ("length", {VQ_IMAGE}),
        ("sample_rate", {"MOTION"}),
        ("preprocess", set(ALL)),
        ("disable_auto_boseos", set(ALL)),
    ],
)
def test_modality_sets(name, kinds):
    assert ATTRIBUTES[name].modalities == kinds


def test_sides():
    assert ATTRIBUTES["closed_set"].sides == {OUTPUT}
    assert ATTRIBUTES["no_loss"].sides == {OUTPUT}
    assert ATTRIBUTES["mask_ratio"].sides == {INPUT}
    assert ATTRIBUTES["noise_ratio"].sides == {INPUT, OUTPUT}


def _instruction(modality: str, name: str, value: str, side: str, vq: bool) -> str:
    extra = ",preprocess=image_vqgan" if vq and name != "preprocess" else ""
    slot = f"[{modality}:x,{name}{value}{extra}]"
    return f"{slot} -> [TEXT:y]" if side == INPUT else f"[TEXT:y] -> {slot}"


CASES = [
    (name, modality, side, vq)
    for name in ATTRIBUTES
    for modality in MODALITIES
    for side in (INPUT, OUTPUT)
    for vq in ((False, True) if modality == "IMAGE" else (False,))
]


@pytest.mark.parametrize("name,modality,side,vq", CASES)
def test_parser_accepts_an_attribute_exactly_where_its_spec_applies(name, modality, side, vq):
    spec = ATTRIBUTES[name]
    value = {FLAG: "", CHOICE: "=default"}.get(spec.type, f"={spec.example}")
    if name in ("adaptor", "preprocess") and vq:
        value = "=image_vqgan"
    text = _instruction(modality, name, value, side, vq)
    kinds = slot_kinds(modality, "image_vqgan" if vq else None)
    applies = bool(spec.modalities & kinds) and side in spec.sides
    if applies:
        parse_instruction(text)
    else:
        with pytest.raises(InstructionError) as info:
            parse_instruction(text)
        assert info.value.template[info.value.column :].startswith(name)


@pytest.mark.parametrize(
    "attr,modality,ok",
    [
        ("preprocess=text_phone", "TEXT", True), ("preprocess=text_phone", "PHONE", False),
        ("preprocess=image_vqgan", "IMAGE", True), ("preprocess=image_resnet", "IMAGE", True),
        ("preprocess=motion_6d", "MOTION", True), ("preprocess=motion_6d", "AUDIO", False),
        ("adaptor=audio_tgt_fbank", "AUDIO", True), ("adaptor=video_image_sequence", "VIDEO", True),
        ("adaptor=video_image_sequence", "IMAGE", False), ("adaptor=text", "BOX", True),
        ("adaptor=image_patch_embed", "IMAGE", True), ("adaptor=motion_6d", "TEXT", False),
    ],
)
def test_choices_apply_per_modality(attr, modality, ok):
    text = f"[TEXT:q] -> [{modality}:x,{attr}]"
    if ok:
        parse_instruction(text)
    else:
        with pytest.raises(InstructionError, match="does not apply"):
            parse_instruction(text)


def test_check_slot_rules():
    assert check_slot({"preprocess": "image_vqgan", "adaptor": "image_vqgan"}) is None
    assert check_slot({"preprocess": "image_vqgan"}) is None
    assert check_slot({"adaptor": "image_vqgan"})[0] == "adaptor"
    assert check_slot({"preprocess": "image_vqgan", "adaptor": "image_resnet"})[0] == "adaptor"
    assert check_slot({"min_length": 5, "max_length": 5}) is None
    assert check_slot({"min_length": 6, "max_length": 5})[0] == "min_length"
