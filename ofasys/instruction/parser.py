"""`parse_instruction(text) -> Instruction`: a hand-written scanner + recursive-descent parser.

Grammar (DESIGN §2)::

    instruction := template ("|||" template)*
    template    := side "->" side
    side        := (text | "<BOS>" | "<EOS>" | slot | group)*
    slot        := "[" MODALITY (":" column)? ("," attr ("=" value)?)* "]"
    group       := "(" side ")" "*"

Rules the grammar alone does not say (why: OFASys accepted anything its regex did not
match as prompt text, so typos silently became prompts; here nothing does):

- Exactly one `->` per template. The input side may be empty (decoder-only); the output
  side must hold at least one slot, since output text alone is a loss-free prefix and
  the decoder would learn nothing.
- Templates are separated by exactly `|||`; `||` or `||||` is an error, as is an empty
  template. A single `|` is prompt text.
- A group `( ... )*` holds at least one slot. Groups do not nest (no OFASys task needs
  it, and the list-valued columns of nested groups would need nested lists); `->`
  cannot be inside a group.
- Prompt text: see `scanner` for which characters are syntax. In short `[ ] ( ) < > ->`
  are syntax, quotes `"` are plain text, and a literal syntax character is written with
  a backslash escape (`\\[`, `\\(`, `-\\>`, ...).
- Positions: 0-based offsets into each template's own source (the unstripped text
  between separators); errors in how templates are separated point into the whole
  instruction.
"""

from __future__ import annotations

from .ast import Group, Instruction, Item, Slot, Special, Template, Text
from .errors import InstructionError, NotSupportedYetError
from .scanner import ARROW, LPAREN, RPAREN, SLOT, SPECIAL, TEXT, Token, scan
from .slot_parser import parse_slot

_ESCAPED_PARENS = "a literal '(' or ')' in prompt text is written \\( or \\)"


def parse_instruction(text: str, *, allow_unsupported: bool = False) -> Instruction:
    """Parse an instruction; raises InstructionError with position and fix when malformed.

    A `preprocess=`/`adaptor=` value that the slot's modality knows (OFASys's names) but marks not
    supported yet raises NotSupportedYetError (an InstructionError, at the first such value) once
    the instruction is otherwise well-formed, unless `allow_unsupported`: then the instruction
    parses as OFASys's language, for tools that only read it. Modalities that can't be
    materialised yet parse either way (materialisation refuses them, naming the slot)."""
    if not isinstance(text, str):
        raise TypeError(f"an instruction is a str, not {type(text).__name__}")
    unsupported: list[NotSupportedYetError] | None = None if allow_unsupported else []
    templates = tuple(
        _TemplateParser(text[start:end], unsupported).parse() for start, end in _split_templates(text)
    )
    if unsupported:
        raise unsupported[0]
    return Instruction(text, templates)


def _split_templates(text: str) -> list[tuple[int, int]]:
    """[start, end) of each template; '|||' separates, escapes (\\|) are skipped."""
    spans, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] != "|":
            i += 1
            continue
        j = i
        while j < n and text[j] == "|":
            j += 1
        if j - i == 3:
            spans.append((start, i))
            start = j
        elif j - i > 1:
            raise InstructionError(
                f"'{text[i:j]}' is not a template separator", text, i,
                "separate templates with exactly '|||'; a literal '|' in prompt text is written \\|",
            )
        i = j
    spans.append((start, n))
    for s, e in spans:
        if not text[s:e].strip():
            if len(spans) == 1:
                raise InstructionError("the instruction is empty", text, 0,
                                       "write a template such as '[IMAGE:img] what is it? -> [TEXT:cap]'")
            raise InstructionError("empty template between '|||' separators", text, s,
                                   "remove the extra '|||' or write a template there")
    return spans


class _TemplateParser:
    """Recursive descent over one template's tokens."""

    def __init__(self, source: str, unsupported: list[NotSupportedYetError] | None = None):
        self.source = source
        self.unsupported = unsupported
        self.tokens = scan(source)
        self.i = 0

    def fail(self, pos: int, message: str, fix: str):
        raise InstructionError(message, self.source, pos, fix)

    def parse(self) -> Template:
        inputs = self.items("input", None)
        if self.i == len(self.tokens):
            self.fail(len(self.source.rstrip()), "missing '->' between inputs and outputs",
                      "separate what the encoder reads from what the decoder writes with '->', "
                      "e.g. '[IMAGE:img] what is it? -> [TEXT:cap]'")
        self.i += 1  # the '->'
        outputs = self.items("output", None)
        if self.i < len(self.tokens):
            self.fail(self.tokens[self.i].pos, "a second '->' in one template",
                      "a template has exactly one '->'; separate templates with '|||', or "
                      "write a literal arrow in prompt text as -\\>")
        if not outputs:
            self.fail(len(self.source.rstrip()), "nothing after '->'",
                      "write what the decoder produces, e.g. '-> [TEXT:target]'")
        if not any(isinstance(item, (Slot, Group)) for item in outputs):  # groups hold slots
            self.fail(outputs[0].pos,
                      "the output side has no slot, so the decoder has nothing to learn",
                      "add an output slot such as [TEXT:target] (output prompt text is a "
                      "forced prefix without loss)")
        return Template(self.source, inputs, outputs)

    def items(self, side: str, group: Token | None) -> tuple[Item, ...]:
        """Items up to '->', ')' or the end (none consumed)."""
        out: list[Item] = []
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.kind == ARROW and group is not None:
                self.fail(group.pos, f"'(' is not closed before '->' at column {tok.pos}",
                          "close the group with ')*' before '->'; " + _ESCAPED_PARENS)
            if tok.kind in (ARROW, RPAREN):
                if tok.kind == RPAREN and group is None:
                    self.fail(tok.pos, "')' without a matching '('", "remove it; " + _ESCAPED_PARENS)
                return tuple(out)
            self.i += 1
            if tok.kind == TEXT:
                text = _text_item(tok)
                if text is not None:
                    out.append(text)
            elif tok.kind == SPECIAL:
                out.append(Special(tok.value, tok.pos))
            elif tok.kind == SLOT:
                out.append(parse_slot(self.source, tok.pos, tok.value, side, self.unsupported))
            elif tok.kind == LPAREN:
                if group is not None:
                    self.fail(tok.pos, "groups cannot nest",
                              "flatten to a single ( ... )* group; " + _ESCAPED_PARENS)
                out.append(self.group(tok, side))
        if group is not None:
            self.fail(group.pos, "'(' is never closed", "close the group with ')*'; " + _ESCAPED_PARENS)
        return tuple(out)

    def group(self, open_tok: Token, side: str) -> Group:
        items = self.items(side, open_tok)
        close = self.tokens[self.i]
        self.i += 1
        if not close.value:
            self.fail(close.pos, "a group '( ... )' must be followed by '*'",
                      "write ')*' to repeat the group per list element; " + _ESCAPED_PARENS)
        if not items:
            self.fail(open_tok.pos, "empty group '( )*'", "put the repeated slots inside, e.g. ( [BOX] [TEXT] )*")
        if not any(isinstance(item, Slot) for item in items):
            self.fail(open_tok.pos, "a group without a slot repeats nothing from the data",
                      "put the repeated slots inside, e.g. ( [BOX] [TEXT] )*; " + _ESCAPED_PARENS)
        return Group(items, open_tok.pos)


def _text_item(tok: Token) -> Text | None:
    """Whitespace-normalised Text at its first non-space char, or None if blank."""
    words: list[str] = []
    current: list[str] = []
    first = -1
    for ch, pos in tok.value:
        if ch.isspace():
            if current:
                words.append("".join(current))
                current = []
            continue
        if first < 0:
            first = pos
        current.append(ch)
    if current:
        words.append("".join(current))
    return Text(" ".join(words), first) if words else None
