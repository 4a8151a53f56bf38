"""Where <BOS>/<EOS> go: Template.resolved_inputs()/resolved_outputs() (rule in boseos.py)."""

from __future__ import annotations

from ofasys.instruction import Group, Slot, Special, Text, parse_instruction


def shape(items) -> list:
    """Compact view: 'BOS'/'EOS' (lower-case when implicit), 'T' text, modality, [group]."""
    out = []
    for i in items:
        if isinstance(i, Special):
            out.append(i.name.lower() if i.implicit else i.name)
        elif isinstance(i, Text):
            out.append("T")
        elif isinstance(i, Slot):
            out.append(i.modality)
        else:
            out.append(shape(i.items))
    return out


def resolved(src: str):
    # BOS/EOS placement is a rule of the language, so it is checked on all of it (VQ images included)
    t = parse_instruction(src, allow_unsupported=True).templates[0]
    return shape(t.resolved_inputs()), shape(t.resolved_outputs())


def test_explicit_specials_are_kept_as_written():
    ins, outs = resolved("[IMAGE:img] <BOS> what? <EOS> -> <BOS> [TEXT:cap] <EOS>")
    assert ins == ["IMAGE", "BOS", "T", "EOS"]
    assert outs == ["BOS", "TEXT", "EOS"]


def test_explicit_asymmetric_markers_are_not_completed():
    # OFASys mnli: the label after <EOS> gets no BOS/EOS of its own
    _, outs = resolved("<BOS> [TEXT:a] <EOS> -> <BOS> can [TEXT:a,no_loss]? <EOS> [TEXT:label,closed_set]")
    assert outs == ["BOS", "T", "TEXT", "T", "EOS", "TEXT"]


def test_automatic_wraps_text_runs_and_skips_pixels():
    ins, outs = resolved("[IMAGE:img] what does the image describe? -> [TEXT:cap]")
    assert ins == ["IMAGE", "bos", "T", "eos"]
    assert outs == ["bos", "TEXT", "eos"]


def test_non_text_like_items_split_runs():
    ins, _ = resolved("look [IMAGE:img] and listen [AUDIO:wav] then [VIDEO:v] [MOTION:m] say [TEXT:q] -> [TEXT:a]")
    assert ins == ["bos", "T", "eos", "IMAGE", "bos", "T", "eos", "AUDIO", "bos", "T", "eos",
                   "VIDEO", "MOTION", "bos", "T", "TEXT", "eos"]


def test_all_text_like_modalities_join_one_run():
    ins, _ = resolved("[TEXT:a] [BOX:b] [STRUCT:c] [PHONE:d] [CATEGORY:e] [IMAGE:f,preprocess=image_vqgan] -> [TEXT:z]")
    assert ins == ["bos", "TEXT", "BOX", "STRUCT", "PHONE", "CATEGORY", "IMAGE", "eos"]


def test_pixel_image_alone_gets_nothing():
    ins, outs = resolved("[IMAGE:img] -> [IMAGE,preprocess=image_vqgan,adaptor=image_vqgan]")
    assert ins == ["IMAGE"]
    assert outs == ["bos", "IMAGE", "eos"]


def test_add_bos_add_eos_around_their_slot_only():
    _, outs = resolved("[IMAGE:img] which? -> [BOX:b,add_bos,add_eos]")
    assert outs == ["bos", "BOX", "eos"]


def test_add_attrs_make_the_side_explicit():
    _, outs = resolved("[IMAGE:img] -> [BOX:b,add_bos,add_eos] [TEXT:label]")
    assert outs == ["bos", "BOX", "eos", "TEXT"]
    _, outs = resolved("[IMAGE:img] -> [TEXT:a,add_bos] [TEXT:b,add_eos]")
    assert outs == ["bos", "TEXT", "TEXT", "eos"]


def test_add_attrs_combine_with_written_specials():
    ins, _ = resolved("<BOS> [TEXT:a] <EOS> [TEXT:b,add_bos,add_eos] -> [TEXT:c]")
    assert ins == ["BOS", "TEXT", "EOS", "bos", "TEXT", "eos"]


def test_disable_auto_boseos_turns_the_side_off():
    ins, outs = resolved("what [TEXT:a] -> [TEXT:b,disable_auto_boseos] done")
    assert ins == ["bos", "T", "TEXT", "eos"]
    assert outs == ["TEXT", "T"]


def test_text_like_group_is_wrapped_as_one_sequence():
    _, outs = resolved("[IMAGE:img] what objects? -> ( [BOX] [TEXT] )*")
    assert outs == ["bos", ["BOX", "TEXT"], "eos"]


def test_mixed_group_has_its_inner_runs_wrapped():
    _, outs = resolved("-> ( [IMAGE:imgs] caption: [TEXT:caps] )*")
    assert outs == [["IMAGE", "bos", "T", "TEXT", "eos"]]


def test_special_inside_group_makes_side_explicit():
    _, outs = resolved("[IMAGE:i] -> [TEXT:a] ( <BOS> [BOX] <EOS> )*")
    assert outs == ["TEXT", ["BOS", "BOX", "EOS"]]


def test_add_attrs_inside_groups():
    _, outs = resolved("[IMAGE:i] -> ( [BOX:b,add_bos,add_eos] [IMAGE:j] )*")
    assert outs == [["bos", "BOX", "eos", "IMAGE"]]


def test_implicit_positions_follow_their_run():
    src = "[IMAGE:img] what is it? -> [BOX:b,add_bos] [TEXT:c,add_eos]"
    t = parse_instruction(src).templates[0]
    ins = t.resolved_inputs()
    assert (ins[1].pos, ins[3].pos) == (src.index("what"), src.index("what"))
    outs = t.resolved_outputs()
    assert outs[0] == Special("BOS", src.index("[BOX"), implicit=True)
    assert outs[-1] == Special("EOS", src.index("[TEXT:c"), implicit=True)


def test_resolution_does_not_change_the_template():
    t = parse_instruction("[IMAGE:img] what? -> ( [BOX] [TEXT] )*").templates[0]
    before = (t.inputs, t.outputs)
    t.resolved_inputs(), t.resolved_outputs()
    assert (t.inputs, t.outputs) == before
    assert isinstance(t.outputs[0], Group) and len(t.outputs) == 1
