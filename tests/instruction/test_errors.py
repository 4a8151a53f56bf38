"""Each malformed instruction is refused with the right column, a caret line and a fix."""

from __future__ import annotations

import pickle

import pytest

from ofasys.instruction import InstructionError, NotSupportedYetError, parse_instruction
from ofasys.instruction.errors import caret_block


def at(text: str, marker: str, nth: int = 1) -> int:
    """Offset of the nth occurrence of `marker` in `text` (the expected caret column)."""
    pos = -1
    for _ in range(nth):
        pos = text.index(marker, pos + 1)
    return pos


# (instruction, expected column, words in the message, words in the fix)
CASES = [
    # modality
    ("[IMAGE:img] -> [BOUNDING_BOX:b]", "BOUNDING", "unknown modality 'BOUNDING_BOX'", "did you mean BOX?"),
    ("[text:a] -> [TEXT:b]", "text", "unknown modality 'text'", "did you mean TEXT?"),
    ("[IMG:a] -> [TEXT:b]", "IMG", "unknown modality", "did you mean IMAGE?"),
    ("[:a] -> [TEXT:b]", ":", "slot has no modality", "[TEXT:column]"),
    ("[] -> [TEXT:b]", "]", "slot has no modality", "modalities: TEXT"),
    # column
    ("[TEXT:my-col] -> [TEXT:b]", "my-col", "column 'my-col' is not an identifier", "'my_col'"),
    ("[TEXT:1abc] -> [TEXT:b]", "1abc", "not an identifier", "'_1abc'"),
    ("[TEXT:a.b] -> [TEXT:b]", "a.b", "not an identifier", "'a_b'"),
    ("[TEXT:] -> [TEXT:b]", "]", "empty column name", "[TEXT:caption]"),
    ("[TEXT:a b] -> [TEXT:c]", "b]", "unexpected 'b' in slot", "[MODALITY:column,attr,attr=value]"),
    # attribute names
    ("[TEXT:a,preprocessor=text_phone] -> [TEXT:b]", "preprocessor", "unknown attribute 'preprocessor'", "did you mean preprocess=?"),
    ("[TEXT:a] -> [TEXT:b,closedset]", "closedset", "unknown attribute 'closedset'", "did you mean closed_set?"),
    ("[TEXT:a] -> [TEXT:b,is_label]", "is_label", "unknown attribute 'is_label'", "attributes of TEXT slots: no_loss"),
    ("[TEXT:a,] -> [TEXT:b]", "]", "empty attribute", "remove the extra ','"),
    ("[TEXT:a] -> [TEXT:b,uncased,uncased]", ("uncased", 2), "'uncased' is given twice", "keep one 'uncased'"),
    # attribute values
    ("[STRUCT:db,max_length=abc] -> [TEXT:b]", "abc", "'max_length=abc' is not an integer", "max_length=128"),
    ("[STRUCT:db,max_length=876.0] -> [TEXT:b]", "876.0", "not an integer", "an integer >= 1"),
    ("[STRUCT:db,max_length=1_000] -> [TEXT:b]", "1_000", "not an integer", "max_length="),
    ("[STRUCT:db,max_length=0] -> [TEXT:b]", "0]", "out of range", "an integer >= 1"),
    ("[TEXT:a,mask_ratio=1.5] -> [TEXT:b]", "1.5", "'mask_ratio=1.5' is out of range", "a number in [0, 1]"),
    ("[TEXT:a,mask_ratio=-0.1] -> [TEXT:b]", "-0.1", "out of range", "mask_ratio=0.3"),
    ("[TEXT:a,mask_ratio=abc] -> [TEXT:b]", "abc", "is not a number", "mask_ratio=0.3"),
    ("[TEXT:a,mask_ratio=1e-1] -> [TEXT:b]", "1e-1", "is not a number", "a number in [0, 1]"),
    ("[TEXT:a] -> [TEXT:b,min_length=-1]", "-1", "out of range", "an integer >= 0"),
    ("[TEXT:a] -> [TEXT:b,preprocess=vqgan]", "vqgan", "'vqgan' is not a valid value of 'preprocess'", "did you mean image_vqgan?"),
    # flag / value form
    ("[TEXT:a] -> [TEXT:b,no_loss=true]", "=", "'no_loss' is a flag and takes no value", "without '=true'"),
    ("[TEXT:a] -> [TEXT:b,max_length]", "max_length", "'max_length' needs a value", "max_length=128"),
    ("[TEXT:a] -> [TEXT:b,max_length=]", "=", "'max_length' needs a value", "max_length=128"),
    # attribute vs modality / side
    ("[IMAGE:img,uncased] -> [TEXT:b]", "uncased", "'uncased' does not apply to IMAGE slots", "TEXT, STRUCT, CATEGORY"),
    ("[AUDIO:wav,mask_ratio=0.2] -> [TEXT:b]", "mask_ratio", "does not apply to AUDIO slots", "TEXT, IMAGE, STRUCT, PHONE"),
    ("[IMAGE:img,length=256] -> [TEXT:b]", "length", "'length' does not apply to IMAGE slots", "IMAGE (preprocess=image_vqgan)"),
    ("[TEXT:a,closed_set] -> [TEXT:b]", "closed_set", "'closed_set' does not apply to input slots", "output (right of ->)"),
    ("[TEXT:a] -> [TEXT:b,mask_ratio=0.3]", "mask_ratio", "does not apply to output slots", "input (left of ->)"),
    ("[TEXT:a] -> [TEXT:b,preprocess=image_vqgan]", "image_vqgan", "preprocess=image_vqgan does not apply to TEXT slots", "for TEXT use one of: default, text"),
    ("[AUDIO:w] -> [TEXT:b,adaptor=audio_fbank]", "audio_fbank", "adaptor=audio_fbank does not apply to TEXT slots", "is for AUDIO"),
    ("[IMAGE:img,preprocess=image_resnet] -> [TEXT:b]", "image_resnet", "'image_resnet' is not a valid value of 'preprocess'", "did you mean adaptor=image_resnet?"),
    ("[TEXT:a] -> [TEXT:b,adaptor=txt]", "txt", "'txt' is not a valid value of 'adaptor'", "did you mean text? adaptor of TEXT slots is one of: default, text"),
    # valid, but not supported yet (OFASys's names): refused at the value, after every other check
    ("[IMAGE:img,preprocess=imagepretrain] -> [TEXT:b]", "imagepretrain", "preprocess=imagepretrain is not supported yet: its per-epoch random resize", "leave preprocess out (the default is supported), or use preprocess=image or preprocess=image_vqgan"),
    ("[IMAGE:img,adaptor=image_vit] -> [TEXT:b]", "image_vit", "adaptor=image_vit is not supported yet", "use adaptor=image_resnet or adaptor=image_patch_embed"),
    ("[IMAGE:img,preprocess=imagenet] -> [TEXT:b]", "imagenet", "preprocess=imagenet is not supported yet: its per-epoch RandAugment", "or use preprocess=image"),
    ("[TEXT:a] -> [TEXT:b,preprocess=category]", "category", "preprocess=category is not supported yet on TEXT slots: write the label column as a [CATEGORY:<column>] slot", "leave preprocess out"),
    ("[AUDIO:v,preprocess=audio_embed] -> [TEXT:b]", "audio_embed", "preprocess=audio_embed is not supported yet: pre-computed audio embeddings", "or use preprocess=audio"),
    ("[TEXT:a,preprocess=default] -> [IMAGE,preprocess=image_vqgan,adaptor=image_vqgan,length=0]", "0]", "'length=0' is out of range", "an integer >= 1"),
    # cross-attribute
    ("[TEXT:a] -> [IMAGE,adaptor=image_vqgan]", "adaptor", "needs VQ codes", "add preprocess=image_vqgan"),
    ("[TEXT:a] -> [IMAGE,preprocess=image_vqgan,adaptor=image_resnet]", "adaptor", "cannot embed the VQ codes", "adaptor=image_vqgan"),
    ("[TEXT:a] -> [TEXT:b,min_length=9,max_length=4]", "min_length", "min_length=9 is larger than max_length=4", "min_length <= max_length"),
    # arrows
    ("[TEXT:a] [TEXT:b]", 17, "missing '->'", "with '->'"),
    ("[TEXT:a] -> [TEXT:b] -> [TEXT:c]", ("->", 2), "a second '->'", "'|||'"),
    ("[TEXT:a] ->", 11, "nothing after '->'", "-> [TEXT:target]"),
    ("[TEXT:a] -> just text", "just", "the output side has no slot", "[TEXT:target]"),
    # brackets
    ("[TEXT:a -> [TEXT:b]", "[TEXT:a", "'[' is not closed before ->", "close the slot with ']'"),
    ("[TEXT:a] -> [TEXT:b", "[TEXT:b", "'[' is never closed", "close the slot with ']'"),
    ('[TEXT:cap " describe? -> [TEXT:b]', "[TEXT:cap", "not closed before '\"'", "close the slot"),
    ("[TEXT:a] -> [TEXT:b]]", 20, "']' without a matching '['", "\\]"),
    ("[TEXT:a] -> [TEXT:b] ]", 21, "']' without a matching '['", "\\]"),
    ("[IMAGE:img] detect -> [[BOX][TEXT]]*", "[[", "slots cannot nest", "( [BOX] [TEXT] )*"),
    ("[IMAGE:img] -> [BOX]*", "*", "'*' repeats a group, not a slot", "( [BOX] )*"),
    # groups
    ("[TEXT:a] -> ( [TEXT:b]", "(", "'(' is never closed", "')*'"),
    ("( [TEXT:a] -> [TEXT:b] )*", "(", "'(' is not closed before '->'", "')*' before '->'"),
    ("[TEXT:a] ) -> [TEXT:b]", ")", "')' without a matching '('", "\\("),
    ("[TEXT:a] -> ([BOX] [TEXT])", ")", "must be followed by '*'", "write ')*'"),
    ("[TEXT:a] -> ([BOX] [TEXT]) *", ")", "must be followed by '*'", "write ')*'"),
    ("[TEXT:a] -> ()*", "(", "empty group", "( [BOX] [TEXT] )*"),
    ("[TEXT:a] -> ( some text )* [TEXT:b]", "(", "a group without a slot", "( [BOX] [TEXT] )*"),
    ("[TEXT:a] -> ( ( [TEXT:b] )* )*", ("(", 2), "groups cannot nest", "flatten"),
    ("the answer (yes or no) is [TEXT:a] -> [TEXT:b]", ")", "must be followed by '*'", "\\( or \\)"),
    # specials
    ("<FOO> [TEXT:a] -> [TEXT:b]", "<FOO>", "unknown special token <FOO>", "only <BOS> and <EOS> exist"),
    ("<bos> [TEXT:a] -> [TEXT:b]", "<bos>", "unknown special token <bos>", "did you mean <BOS>?"),
    ("[TEXT:a] -> [TEXT:b] </s>", "</s>", "unknown special token </s>", "did you mean <EOS>?"),
    ("<BOS [TEXT:a] -> [TEXT:b]", "<BOS", "'<BOS' is not closed with '>'", "write <BOS> or <EOS>"),
    # escapes
    ("what \\n is [TEXT:a] -> [TEXT:b]", "\\n", "unknown escape '\\n'", "\\\\ for a literal backslash"),
    ("[TEXT:a] -> [TEXT:b] \\", "\\", "escapes nothing", "\\["),
]


def _column(text: str, locator) -> int:
    if isinstance(locator, int):
        return locator
    if isinstance(locator, tuple):
        return at(text, *locator)
    return at(text, locator)


@pytest.mark.parametrize("text,locator,message,fix", CASES, ids=[c[2][:40] for c in CASES])
def test_malformed_instruction_is_refused_at_its_column(text, locator, message, fix):
    with pytest.raises(InstructionError) as info:
        parse_instruction(text)
    err = info.value
    column = _column(text, locator)
    assert (err.column, err.template) == (column, text)
    assert message in err.message
    assert fix in err.fix
    lines = str(err).split("\n")
    assert lines[0] == err.message
    assert lines[1] == "    " + text
    assert lines[2] == "    " + " " * column + "^"
    assert lines[3] == "fix: " + err.fix


@pytest.mark.parametrize(
    "text,column,message",
    [
        ("[TEXT:a] -> [TEXT:b] ||| ", 24, "empty template between '|||'"),
        ("[TEXT:a] -> [TEXT:b] |||   ||| [TEXT:c] -> [TEXT:d]", 24, "empty template"),
        ("||| [TEXT:c] -> [TEXT:d]", 0, "empty template"),
        ("[TEXT:a] -> [TEXT:b] || [TEXT:c] -> [TEXT:d]", 21, "'||' is not a template separator"),
        ("[TEXT:a] -> [TEXT:b] |||| [TEXT:c] -> [TEXT:d]", 21, "'||||' is not a template separator"),
        ("", 0, "the instruction is empty"),
        ("   \n ", 0, "the instruction is empty"),
    ],
)
def test_separator_errors_point_into_the_whole_instruction(text, column, message):
    with pytest.raises(InstructionError) as info:
        parse_instruction(text)
    assert (info.value.column, info.value.template) == (column, text)
    assert message in info.value.message
    assert str(info.value).split("\n")[2] == "    " + " " * column + "^"


def test_error_in_second_template_points_into_that_template():
    text = "[TEXT:a] -> [TEXT:b] ||| [TEXT:a] -> [TEXT:b,max_length=x]"
    with pytest.raises(InstructionError) as info:
        parse_instruction(text)
    second = text[text.index("|||") + 3 :]
    assert info.value.template == second
    assert info.value.column == second.index("x]")


def test_multiline_template_shows_the_offending_line():
    text = "[IMAGE:img] what is it? ->\n  <BOS> [TEXT:cap,max_length=abc] <EOS>"
    with pytest.raises(InstructionError) as info:
        parse_instruction(text)
    err = info.value
    assert err.column == text.index("abc")
    lines = str(err).split("\n")
    assert "(line 2 of the template)" in lines[0]
    assert lines[1] == "      <BOS> [TEXT:cap,max_length=abc] <EOS>"
    assert lines[2] == "    " + " " * (err.column - text.index("\n") - 1) + "^"


def test_tabs_keep_the_caret_aligned():
    block = caret_block("\t[TEXT:a]\tx", 10)
    assert block.split("\n") == ["     [TEXT:a] x", "    " + " " * 10 + "^"]


def test_caret_after_the_end_of_the_template():
    assert caret_block("ab", 2).split("\n")[1] == "      ^"


def test_instruction_error_is_a_value_error_and_pickles():
    with pytest.raises(ValueError):
        parse_instruction("[TEXT:a]")
    err = InstructionError("m", "[TEXT:a]", 3, "f")
    back = pickle.loads(pickle.dumps(err))
    assert (back.message, back.template, back.column, back.fix) == ("m", "[TEXT:a]", 3, "f")
    assert str(back) == str(err)


def test_not_supported_yet_is_an_instruction_error_and_a_not_implemented_error():
    text = "[IMAGE:img,preprocess=imagenet,adaptor=image_vit] -> [TEXT:a]"
    with pytest.raises(NotSupportedYetError) as info:
        parse_instruction(text)
    err = info.value
    assert isinstance(err, InstructionError) and isinstance(err, NotImplementedError)
    assert err.column == text.index("imagenet")  # the first refused value, preprocess= (not adaptor=)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NotSupportedYetError and str(back) == str(err)
    slot = parse_instruction(text, allow_unsupported=True).templates[0].inputs[0]
    assert (slot.preprocess, slot.attrs["adaptor"]) == ("imagenet", "image_vit")


@pytest.mark.parametrize(
    "text,marker",
    [
        ("[IMAGE:img,preprocess=imagepretrain] -> [TEXT:b,max_length=x]", "x]"),
        ("[IMAGE:img,preprocess=imagepretrain] -> [TEXT:b] ||| [TEXT:a] -> [TEXT:b", "[TEXT:b"),
    ],
)
def test_a_malformed_part_is_reported_before_a_value_not_supported_yet(text, marker):
    """"Not supported yet" means the instruction is right: it is only said once nothing is wrong."""
    with pytest.raises(InstructionError) as info:
        parse_instruction(text)
    assert not isinstance(info.value, NotSupportedYetError)
    assert info.value.template[info.value.column :].startswith(marker)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse_instruction(None)  # type: ignore[arg-type]
