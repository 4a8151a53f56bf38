"""Scanner: one template's source -> tokens (text runs, slots, specials, parens, arrows).

Lexical rules (why: every character is either syntax or prompt text, decided locally,
so no typo can fall through to the prompt unnoticed):

- `[` always opens a slot, which must close with `]` before any of `[ ( ) < > | " \\`,
  `->` or a newline (a slot holds only `MODALITY:column,attr=value`, so meeting one of
  those means a forgotten `]`). A `]` outside a slot is an error, and so is `*` right
  after a slot (`*` repeats groups only).
- `(` and `)` always delimit a group; `)` must be followed immediately by `*` (checked
  by the parser, which knows whether a group is open).
- `<` followed by a letter, `_` or `/` starts a special token, which must be `<BOS>` or
  `<EOS>`. A `<` followed by anything else (`a < b`) is prompt text, as is a lone `>`.
- `->` always separates inputs from outputs.
- Everything else is prompt text, including quotes `"` and single `|` or `*`.
- Backslash escapes put a literal syntax character into prompt text:
  `\\[ \\] \\( \\) \\< \\> \\| \\* \\- \\\\` (so a literal arrow is `-\\>`). Any other
  backslash sequence is an error.

Template separators (`|||`) are split off before scanning, by the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InstructionError
from .suggest import did_you_mean

TEXT, SLOT, SPECIAL, LPAREN, RPAREN, ARROW = "text", "slot", "special", "lparen", "rparen", "arrow"
SPECIALS = ("BOS", "EOS")
ESCAPABLE = frozenset("[]()<>|*\\-")
_SLOT_STOPS = frozenset('[()<>|"\\\n')
_SPECIAL_ALIASES = {"s": "BOS", "/s": "EOS", "bos": "BOS", "eos": "EOS", "/bos": "EOS", "/eos": "EOS"}
_ESCAPE_FIX = "a literal '{c}' in prompt text is written \\{c}"


@dataclass(frozen=True)
class Token:
    """`value`: TEXT -> tuple of (char, pos); SLOT -> pos of the closing ']';
    SPECIAL -> 'BOS'/'EOS'; RPAREN -> whether '*' follows; else None."""

    kind: str
    pos: int
    value: Any = None


def scan(source: str) -> list[Token]:
    """Tokens of one template source; raises InstructionError on lexical errors."""
    tokens: list[Token] = []
    text: list[tuple[str, int]] = []

    def fail(pos: int, message: str, fix: str) -> None:
        raise InstructionError(message, source, pos, fix)

    def emit(kind: str, pos: int, value: Any = None) -> None:
        if text:
            tokens.append(Token(TEXT, text[0][1], tuple(text)))
            text.clear()
        tokens.append(Token(kind, pos, value))

    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "\\":
            nxt = source[i + 1] if i + 1 < n else ""
            if nxt not in ESCAPABLE or not nxt:
                fail(i, f"unknown escape '\\{nxt}'" if nxt else "'\\' at the end escapes nothing",
                     "escapes are \\[ \\] \\( \\) \\< \\> \\| \\* \\- \\\\; write \\\\ for a "
                     "literal backslash")
            text.append((nxt, i))
            i += 2
        elif c == "[":
            close = _slot_end(source, i, fail)
            emit(SLOT, i, close)
            i = close + 1
            if i < n and source[i] == "*":
                fail(i, "'*' repeats a group, not a slot",
                     f"wrap what repeats in a group: ( {source[tokens[-1].pos:i]} )*")
        elif c == "]":
            fail(i, "']' without a matching '['", "remove it; " + _ESCAPE_FIX.format(c="]"))
        elif c == "(":
            emit(LPAREN, i)
            i += 1
        elif c == ")":
            star = source.startswith("*", i + 1)
            emit(RPAREN, i, star)
            i += 2 if star else 1
        elif source.startswith("->", i):
            emit(ARROW, i)
            i += 2
        elif c == "<" and i + 1 < n and (source[i + 1].isalpha() or source[i + 1] in "_/"):
            name, end = _special(source, i, fail)
            emit(SPECIAL, i, name)
            i = end
        else:
            text.append((c, i))
            i += 1
    if text:
        tokens.append(Token(TEXT, text[0][1], tuple(text)))
    return tokens


def _slot_end(source: str, start: int, fail) -> int:
    """Position of the ']' closing the slot opened at `start`."""
    j = start + 1
    while j < len(source):
        ch = source[j]
        if ch == "]":
            return j
        if ch in _SLOT_STOPS or source.startswith("->", j):
            what = "->" if ch == "-" else ("a newline" if ch == "\n" else f"'{ch}'")
            if ch == "[" and j == start + 1:
                fail(start, "'[[' : slots cannot nest",
                     "to repeat items write a group: ( [BOX] [TEXT] )*")
            fail(start, f"'[' is not closed before {what} at column {j}",
                 "close the slot with ']' (a slot holds only MODALITY:column,attributes); "
                 + _ESCAPE_FIX.format(c="["))
        j += 1
    fail(start, "'[' is never closed", "close the slot with ']'; " + _ESCAPE_FIX.format(c="["))
    raise AssertionError("unreachable")


def _special(source: str, start: int, fail) -> tuple[str, int]:
    """(name, end) of the `<NAME>` at `start`; only <BOS> and <EOS> exist."""
    j = start + 1
    while j < len(source) and (source[j].isalnum() or source[j] in "_/"):
        j += 1
    name = source[start + 1 : j]
    if not source.startswith(">", j):
        fail(start, f"'<{name}' is not closed with '>'",
             "write <BOS> or <EOS>; " + _ESCAPE_FIX.format(c="<"))
    if name not in SPECIALS:
        guess = _SPECIAL_ALIASES.get(name.casefold()) or did_you_mean(name, SPECIALS)
        hint = f"did you mean <{guess}>? " if guess else ""
        fail(start, f"unknown special token <{name}>",
             f"{hint}only <BOS> and <EOS> exist; " + _ESCAPE_FIX.format(c="<"))
    return name, j + 1
