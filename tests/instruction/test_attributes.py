"""The attribute table: declared once, typed, ranged, and applied where the registry says."""

from __future__ import annotations

import pytest

from ofasys.instruction import ATTRIBUTES, MODALITIES, InstructionError, NotSupportedYetError, parse_instruction
from ofasys.instruction.attributes import (
    ALL, CHOICE, DEFAULT, FLAG, FLOAT, INT, INPUT, OUTPUT, STR, AttributeProblem, check_slot,
)
from ofasys.instruction.modalities import REGISTRY
from ofasys.modalities.image import VQ_KIND as VQ_IMAGE

OFASYS_ATTRIBUTES = {
    "no_loss", "closed_set", "mask_ratio", "noise_ratio", "max_length", "min_length", "uncased",
    "no_punctuation", "preprocess", "adaptor", "add_bos", "add_eos", "disable_auto_boseos", "length",
}


def test_every_ofasys_attribute_is_declared_once_and_well_formed():
    assert OFASYS_ATTRIBUTES <= set(ATTRIBUTES)
    for name, spec in ATTRIBUTES.items():
        assert spec.name == name
        assert spec.type in (FLAG, INT, FLOAT, STR, CHOICE)
        assert spec.kinds and spec.kinds <= ALL
        assert spec.sides and spec.sides <= {INPUT, OUTPUT}
        assert len(spec.doc) > 20
        if spec.type != FLAG:
            spec.coerce(spec.example)  # the example shown in fixes is itself valid
        if spec.type == CHOICE:
            assert dict(spec.choices)[DEFAULT].keys() == set(MODALITIES)  # every modality has a default


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
def test_declared_kinds(name, kinds):
    """The modality files declare what the attribute table used to hard-code (OFASys's usage)."""
    assert ATTRIBUTES[name].kinds == kinds


def test_attribute_kinds_are_exactly_the_registry_declarations():
    declared = {name for m in REGISTRY.values() for names in m.attributes.values() for name in names}
    assert declared <= set(ATTRIBUTES), f"declared but unknown to the parser: {declared - set(ATTRIBUTES)}"
    for name, spec in ATTRIBUTES.items():
        assert spec.kinds == {k for m in REGISTRY.values() for k, names in m.attributes.items() if name in names}


def test_choice_values_are_exactly_the_registry_tables():
    for spec, table in ((ATTRIBUTES["preprocess"], "preprocess"), (ATTRIBUTES["adaptor"], "adaptors")):
        expected = {}
        for m in REGISTRY.values():
            for value, reason in getattr(m, table).items():
                expected.setdefault(value, {})[m.name] = reason
        assert {v: dict(w) for v, w in spec.choices} == expected


def test_every_kind_a_slot_can_have_is_declared():
    """A kind without an `attributes` entry would make every attribute 'not apply' to such slots."""
    for m in REGISTRY.values():
        for value in (None, *m.preprocess):
            assert m.kinds(value) <= set(m.attributes), (m.name, value)


def test_sides():
    assert ATTRIBUTES["closed_set"].sides == {OUTPUT}
    assert ATTRIBUTES["no_loss"].sides == {OUTPUT}
    assert ATTRIBUTES["mask_ratio"].sides == {INPUT}
    assert ATTRIBUTES["noise_ratio"].sides == {INPUT, OUTPUT}


def _slot_cases():
    """(modality, preprocess making the kind or None, attribute, side) for every registered modality,
    every kind its slots can have, every attribute and both sides."""
    for m in REGISTRY.values():
        seen = set()
        for pre in (None, *m.preprocess):
            kinds = m.kinds(pre)
            if kinds in seen:
                continue
            seen.add(kinds)
            for name in ATTRIBUTES:
                for side in (INPUT, OUTPUT):
                    yield m.name, pre, name, side


CASES = list(_slot_cases())


def _instruction(modality: str, pre: str | None, name: str, side: str) -> str:
    spec = ATTRIBUTES[name]
    value = {FLAG: "", CHOICE: f"={DEFAULT}"}.get(spec.type, f"={spec.example}")
    if name == "preprocess" and pre:
        value = f"={pre}"
    extra = f",preprocess={pre}" if pre and name != "preprocess" else ""
    slot = f"[{modality}:x,{name}{value}{extra}]"
    return f"{slot} -> [TEXT:y]" if side == INPUT else f"[TEXT:y] -> {slot}"


@pytest.mark.parametrize("modality,pre,name,side", CASES, ids=[f"{m}-{p}-{n}-{s}" for m, p, n, s in CASES])
def test_parser_accepts_an_attribute_exactly_where_the_modality_declares_it(modality, pre, name, side):
    """Per registered modality and kind: the parser accepts exactly the declared attribute set."""
    m = REGISTRY[modality]
    declared = set().union(*(m.attributes[k] for k in m.kinds(pre)))
    applies = name in declared and side in ATTRIBUTES[name].sides
    text = _instruction(modality, pre, name, side)
    if applies:
        parse_instruction(text, allow_unsupported=True)
        try:
            parse_instruction(text)
        except NotSupportedYetError as err:  # only ever a preprocess=/adaptor= value, never the attribute
            assert err.template[: err.column].endswith(("preprocess=", "adaptor="))
    else:
        with pytest.raises(InstructionError) as info:
            parse_instruction(text, allow_unsupported=True)
        assert info.value.template[info.value.column :].startswith(name)
        assert "does not apply" in info.value.message


CHOICE_CASES = [
    (spec.name, value, modality)
    for spec in ATTRIBUTES.values() if spec.type == CHOICE
    for value, _ in spec.choices
    for modality in MODALITIES
]


@pytest.mark.parametrize("attr,value,modality", CHOICE_CASES)
def test_choice_value_applies_exactly_to_the_modalities_listing_it(attr, value, modality):
    spec = ATTRIBUTES[attr]
    table = "preprocess" if attr == "preprocess" else "adaptors"
    # VQ codes need both attributes (check_slot); any other value stands alone
    extra = ",preprocess=image_vqgan" if attr == "adaptor" and value == "image_vqgan" else ""
    text = f"[TEXT:q] -> [{modality}:x,{attr}={value}{extra}]"
    if value in getattr(REGISTRY[modality], table):
        parse_instruction(text, allow_unsupported=True)
    else:
        with pytest.raises(InstructionError) as info:
            parse_instruction(text, allow_unsupported=True)
        assert info.value.message == f"{attr}={value} does not apply to {modality} slots"
        assert f"{attr}={value} is for {', '.join(m for m in MODALITIES if m in spec.choice_modalities(value))}" \
            in info.value.fix


NOT_YET = [
    (attr, value, name, reason)
    for attr, table in (("preprocess", "preprocess"), ("adaptor", "adaptors"))
    for name, m in REGISTRY.items()
    for value, reason in getattr(m, table).items()
    if reason is not None and value != DEFAULT
]


@pytest.mark.parametrize("attr,value,modality,reason", NOT_YET, ids=[f"{m}-{a}={v}" for a, v, m, _ in NOT_YET])
def test_a_value_marked_not_supported_is_refused_at_the_value_with_the_reason(attr, value, modality, reason):
    extra = ",preprocess=image_vqgan" if attr == "adaptor" and value == "image_vqgan" else ""
    text = f"[TEXT:q] -> [{modality}:x,{attr}={value}{extra}]"
    with pytest.raises(NotSupportedYetError) as info:
        parse_instruction(text)
    err = info.value
    assert isinstance(err, InstructionError) and isinstance(err, NotImplementedError)
    assert err.column == text.index(f"{attr}={value}") + len(attr) + 1
    assert err.message == f"{attr}={value} is {reason}"
    assert "not a valid value" not in err.message and err.fix
    parse_instruction(text, allow_unsupported=True)


def test_every_not_supported_reason_says_so_and_default_mirrors_the_modality_status():
    for m in REGISTRY.values():
        for table in (m.preprocess, m.adaptors):
            assert table[DEFAULT] == m.status, m.name  # default = the modality's own = its status
            for value, reason in table.items():
                assert reason is None or reason.startswith("not supported yet"), (m.name, value, reason)


def test_default_is_never_refused_by_the_parser():
    """`default` means the modality's own; a planned modality is refused by materialisation instead."""
    for name in MODALITIES:
        parse_instruction(f"[TEXT:q] -> [{name}:x,preprocess=default,adaptor=default]")


def test_the_fix_of_a_refused_value_names_what_works_instead():
    with pytest.raises(NotSupportedYetError) as info:
        parse_instruction("[IMAGE:img,adaptor=image_vit] -> [TEXT:cap]")
    assert info.value.fix == "leave adaptor out (the default is supported), or use adaptor=image_resnet or " \
                             "adaptor=image_patch_embed or adaptor=image_vqgan"


def test_a_value_of_the_other_choice_attribute_points_there():
    with pytest.raises(InstructionError) as info:
        parse_instruction("[IMAGE:img,preprocess=image_resnet] -> [TEXT:cap]")
    assert info.value.message == "'image_resnet' is not a valid value of 'preprocess'"
    assert info.value.fix.startswith("'image_resnet' is a value of 'adaptor': did you mean adaptor=image_resnet?")
    assert "preprocess of IMAGE slots is one of: default, image" in info.value.fix


def test_check_slot_rules():
    assert check_slot({"preprocess": "image_vqgan", "adaptor": "image_vqgan"}) is None
    assert check_slot({"preprocess": "image_vqgan"}) is None
    assert check_slot({"adaptor": "image_vqgan"})[0] == "adaptor"
    assert check_slot({"preprocess": "image_vqgan", "adaptor": "image_resnet"})[0] == "adaptor"
    assert check_slot({"min_length": 5, "max_length": 5}) is None
    assert check_slot({"min_length": 6, "max_length": 5})[0] == "min_length"
