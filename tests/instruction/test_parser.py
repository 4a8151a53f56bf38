"""Well-formed instructions: structure, positions, typed attributes, groups, templates."""

from __future__ import annotations

import dataclasses

import pytest

from ofasys.instruction import Group, Instruction, NotSupportedYetError, Slot, Special, Template, Text, parse_instruction


def test_caption_structure_and_positions():
    src = "[IMAGE:img] what does the image describe? -> [TEXT:cap]"
    ins = parse_instruction(src)
    assert ins == Instruction(
        src,
        (
            Template(
                src,
                (Slot("IMAGE", "img", {}, 0), Text("what does the image describe?", 12)),
                (Slot("TEXT", "cap", {}, 45),),
            ),
        ),
    )


def test_explicit_specials_keep_their_positions():
    src = "<BOS> what? <EOS> -> <BOS> [TEXT:cap] <EOS>"
    t = parse_instruction(src).templates[0]
    assert t.inputs == (Special("BOS", 0), Text("what?", 6), Special("EOS", 12))
    assert t.outputs == (Special("BOS", 21), Slot("TEXT", "cap", {}, 27), Special("EOS", 38))


def test_specials_glued_to_text_and_groups():
    t = parse_instruction("[IMAGE] the image ?<EOS> -> <BOS>( [BOX] [TEXT])* <EOS>").templates[0]
    assert t.inputs[1:] == (Text("the image ?", 8), Special("EOS", 19))
    assert isinstance(t.outputs[1], Group) and t.outputs[1].pos == 33


def test_text_is_whitespace_normalised_and_positioned_at_first_char():
    src = "[IMAGE:img]   what   does\n\tthe  image   -> [TEXT:cap]"
    t = parse_instruction(src).templates[0]
    assert t.inputs[1] == Text("what does the image", src.index("what"))


def test_quotes_and_lone_symbols_are_prompt_text():
    src = 'is " [TEXT:a] " a < b, c > d, 3*3 | e? -> [TEXT:b]'
    t = parse_instruction(src).templates[0]
    assert [i.text for i in t.inputs if isinstance(i, Text)] == ['is "', '" a < b, c > d, 3*3 | e?']


def test_escapes_put_syntax_characters_into_text():
    src = r"say \[x\] \(y\)\* a -\> b \| c \\ d \<e [TEXT:a] -> [TEXT:b]"
    t = parse_instruction(src).templates[0]
    assert t.inputs[0] == Text(r"say [x] (y)* a -> b | c \ d <e", 0)


def test_attributes_are_typed():
    t = parse_instruction(
        "[TEXT:a,mask_ratio=0.3,max_length=256,uncased] -> [TEXT:b,closed_set,noise_ratio=1,preprocess=text]"
    ).templates[0]
    a, b = t.inputs[0], t.outputs[0]
    assert a.attrs == {"mask_ratio": 0.3, "max_length": 256, "uncased": True}
    assert type(a.attrs["max_length"]) is int and type(a.attrs["mask_ratio"]) is float
    assert b.attrs == {"closed_set": True, "noise_ratio": 1.0, "preprocess": "text"}
    assert type(b.attrs["noise_ratio"]) is float
    assert list(a.attrs) == ["mask_ratio", "max_length", "uncased"]  # source order kept
    assert b.closed_set and not b.no_loss and b.preprocess == "text"


@pytest.mark.parametrize("raw,value", [(".5", 0.5), ("0", 0.0), ("1.0", 1.0), ("+0.25", 0.25)])
def test_float_spellings(raw, value):
    slot = parse_instruction(f"[TEXT:a,mask_ratio={raw}] -> [TEXT:b]").templates[0].inputs[0]
    assert slot.attrs["mask_ratio"] == value


def test_whitespace_inside_a_slot_is_allowed():
    src = "[ TEXT : a , max_length = 5 ] -> [TEXT:b]"
    slot = parse_instruction(src).templates[0].inputs[0]
    assert slot == Slot("TEXT", "a", {"max_length": 5}, 0)


def test_slot_without_column():
    t = parse_instruction("[IMAGE:img] -> [TEXT]").templates[0]
    assert t.outputs[0].column is None and t.outputs[0].modality == "TEXT"


def test_allow_unsupported_parses_the_whole_ofasys_language():
    src = "[IMAGE:img,preprocess=imagepretrain,adaptor=image_vit] -> [AUDIO:fbank,adaptor=audio_tgt_fbank]"
    with pytest.raises(NotSupportedYetError):
        parse_instruction(src)
    t = parse_instruction(src, allow_unsupported=True).templates[0]
    assert t.inputs[0] == Slot("IMAGE", "img", {"preprocess": "imagepretrain", "adaptor": "image_vit"}, 0)
    assert t.outputs[0] == Slot("AUDIO", "fbank", {"adaptor": "audio_tgt_fbank"}, src.index("[AUDIO"))
    # VQ image codes are supported: they parse by default, the same as with allow_unsupported
    src = "[TEXT:t] -> [IMAGE,preprocess=image_vqgan,adaptor=image_vqgan,length=256]"
    t = parse_instruction(src).templates[0]
    assert t == parse_instruction(src, allow_unsupported=True).templates[0]
    assert t.outputs[0] == Slot("IMAGE", None, {"preprocess": "image_vqgan", "adaptor": "image_vqgan", "length": 256},
                                src.index("[IMAGE"))
    assert t.outputs[0].is_text_like  # VQ codes are tokens


def test_group_structure_and_positions():
    src = "[IMAGE:img] what are the objects? -> ( [BOX:boxes] [TEXT:labels,max_length=8] )*"
    t = parse_instruction(src).templates[0]
    (group,) = t.outputs
    assert group == Group(
        (Slot("BOX", "boxes", {}, src.index("[BOX")), Slot("TEXT", "labels", {"max_length": 8}, src.index("[TEXT"))),
        src.index("("),
    )


def test_group_with_prompt_text_on_input_side():
    src = "( image [IMAGE:imgs] caption [TEXT:caps] )* what next? -> [TEXT:next]"
    t = parse_instruction(src).templates[0]
    group = t.inputs[0]
    assert [type(i).__name__ for i in group.items] == ["Text", "Slot", "Text", "Slot"]
    assert group.items[0] == Text("image", 2)


def test_empty_input_side_is_allowed():
    t = parse_instruction("-> ([IMAGE] [TEXT])*").templates[0]
    assert t.inputs == () and isinstance(t.outputs[0], Group)


def test_several_templates_have_their_own_sources_and_positions():
    src = "[TEXT:a] -> [TEXT:b] ||| what is [TEXT:a]? -> [TEXT:b,max_length=9]"
    ins = parse_instruction(src)
    assert ins.source == src
    first, second = ins.templates
    assert first.source == "[TEXT:a] -> [TEXT:b] "
    assert second.source == " what is [TEXT:a]? -> [TEXT:b,max_length=9]"
    assert second.inputs == (Text("what is", 1), Slot("TEXT", "a", {}, 9), Text("?", 17))
    assert second.source[second.outputs[0].pos] == "["


def test_escaped_bar_is_not_a_separator():
    ins = parse_instruction(r"a \|\|\| b [TEXT:a] -> [TEXT:b]")
    assert len(ins.templates) == 1
    assert ins.templates[0].inputs[0].text == "a ||| b"


def test_multiline_instruction():
    src = '[IMAGE:img] can image and text1 " [TEXT:cap] " imply? ->\n\tcan " [TEXT:cap,no_loss] "? [TEXT:label,closed_set]'
    t = parse_instruction(src).templates[0]
    assert [s.column for _, s in t.slots()] == ["img", "cap", "cap", "label"]
    assert t.outputs[0] == Text('can "', src.index("can \""))


def test_slots_yield_sides_in_order_including_groups():
    t = parse_instruction("[IMAGE:img] [TEXT:q] -> [TEXT:a,no_loss] ( [BOX:b] [TEXT:l] )*").templates[0]
    assert [(side, s.column) for side, s in t.slots()] == [
        ("input", "img"), ("input", "q"), ("output", "a"), ("output", "b"), ("output", "l"),
    ]


def test_ast_is_frozen_hashable_and_deterministic():
    src = "[TEXT:a,max_length=3] -> [TEXT:b,closed_set] ||| [TEXT:a] -> ( [BOX:c] )*"
    first, again = parse_instruction(src), parse_instruction(src)
    assert first == again and hash(first) == hash(again)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.templates[0].inputs[0].column = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.templates[0].inputs[0].attrs["max_length"] = 4  # type: ignore[index]


def test_different_attrs_make_different_slots():
    a = parse_instruction("[TEXT:a,max_length=3] -> [TEXT:b]")
    b = parse_instruction("[TEXT:a,max_length=4] -> [TEXT:b]")
    assert a.templates[0].inputs != b.templates[0].inputs
