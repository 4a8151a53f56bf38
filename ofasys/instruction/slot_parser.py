"""Parse the inside of one slot: `[ MODALITY (:column)? (,attr(=value)?)* ]`.

Whitespace around the parts is allowed (`[TEXT: cap, no_loss]`), nothing else is: every
name is checked (modality, column identifier, attribute), every value typed and
range-checked against its `AttributeSpec`, and each attribute checked against the slot's
kinds and side. Errors point at the part at fault: the modality, the column, the
attribute name, the `=` of a flag given a value, or the value.

A `preprocess=`/`adaptor=` value the slot's modality marks not supported yet is not an error
here: it is handed to the caller's `unsupported` list (a `NotSupportedYetError` at the value),
which the parser raises only once the whole instruction is otherwise well-formed.
"""

from __future__ import annotations

from .ast import Slot
from .attributes import (
    ATTRIBUTES, CHOICE, FLAG, AttributeProblem, check_applicable, check_choice_modality, check_slot,
    not_supported_problem, unknown_choice, unsupported_reason,
)
from .errors import InstructionError, NotSupportedYetError
from .modalities import MODALITIES, slot_kinds
from .suggest import did_you_mean, suggestion_text

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_REST = _IDENT_START | frozenset("0123456789")


def is_identifier(name: str) -> bool:
    """`[A-Za-z_][A-Za-z0-9_]*` (ASCII only: column names become shard member names)."""
    return bool(name) and name[0] in _IDENT_START and set(name) <= _IDENT_REST


def _as_identifier(name: str) -> str:
    fixed = "".join(c if c in _IDENT_REST else "_" for c in name)
    return fixed if fixed[:1] in _IDENT_START else "_" + fixed


class _Cursor:
    """Reads the body of a slot, `source[i:end]`, keeping absolute positions."""

    def __init__(self, source: str, i: int, end: int):
        self.source, self.i, self.end = source, i, end

    def peek(self) -> str:
        return self.source[self.i] if self.i < self.end else ""

    def skip_ws(self) -> None:
        while self.i < self.end and self.source[self.i].isspace():
            self.i += 1

    def until(self, stops: str) -> str:
        """Read up to (not including) a char in `stops` or whitespace."""
        start = self.i
        while self.i < self.end and self.source[self.i] not in stops and not self.source[self.i].isspace():
            self.i += 1
        return self.source[start : self.i]


def parse_slot(source: str, start: int, end: int, side: str,
               unsupported: list[NotSupportedYetError] | None = None) -> Slot:
    """The Slot for `source[start] == '['` .. `source[end] == ']'` on `side`.

    Values its modality marks not supported yet are appended to `unsupported` when given (else
    accepted: the language is OFASys's, only this code's support is missing)."""

    def fail(pos: int, message: str, fix: str) -> None:
        raise InstructionError(message, source, pos, fix)

    cur = _Cursor(source, start + 1, end)
    cur.skip_ws()
    mpos = cur.i
    modality = cur.until(":,")
    if not modality:
        fail(mpos, "slot has no modality",
             "start the slot with a modality, e.g. [TEXT:column]; modalities: " + ", ".join(MODALITIES))
    if modality not in MODALITIES:
        fail(mpos, f"unknown modality '{modality}'",
             suggestion_text(modality, MODALITIES) + "modalities are: " + ", ".join(MODALITIES))
    column = _column(cur, fail)
    raw_attrs = _raw_attrs(cur, fail)
    attrs = _typed_attrs(raw_attrs, modality, fail)
    kinds = slot_kinds(modality, attrs.get("preprocess"))
    for name, npos, raw, _eq, vpos in raw_attrs:
        spec = ATTRIBUTES[name]
        try:
            check_applicable(spec, kinds, modality, side)
        except AttributeProblem as problem:
            fail(npos, problem.message, problem.fix)
        try:
            if spec.type == CHOICE:
                check_choice_modality(spec, attrs[name], modality, unsupported is None)
        except AttributeProblem as problem:
            fail(vpos, problem.message, problem.fix)
    blamed = check_slot(attrs)
    if blamed is not None:
        name, problem = blamed
        fail(next(p for n, p, *_ in raw_attrs if n == name), problem.message, problem.fix)
    for name, _npos, _raw, _eq, vpos in raw_attrs if unsupported is not None else ():
        spec = ATTRIBUTES[name]
        reason = unsupported_reason(spec, attrs[name], modality) if spec.type == CHOICE else None
        if reason is not None:
            problem = not_supported_problem(spec, attrs[name], modality, reason)
            unsupported.append(NotSupportedYetError(problem.message, source, vpos, problem.fix))
    return Slot(modality, column, attrs, start)


def _column(cur: _Cursor, fail) -> str | None:
    cur.skip_ws()
    if cur.peek() != ":":
        return None
    cur.i += 1
    cur.skip_ws()
    cpos = cur.i
    column = cur.until(",")
    if not column:
        fail(cpos, "empty column name after ':'",
             "write a column name, e.g. [TEXT:caption], or drop the ':' for a slot without a column")
    if not is_identifier(column):
        fail(cpos, f"column '{column}' is not an identifier",
             "column names are ASCII letters, digits and '_', not starting with a digit, "
             f"e.g. '{_as_identifier(column)}'")
    return column


def _raw_attrs(cur: _Cursor, fail) -> list[tuple[str, int, str | None, int, int]]:
    """[(name, name_pos, raw value or None, '=' pos, value pos)] in source order."""
    found = []
    while True:
        cur.skip_ws()
        if cur.i >= cur.end:
            return found
        if cur.peek() != ",":
            fail(cur.i, f"unexpected '{cur.peek()}' in slot",
                 "a slot is [MODALITY:column,attr,attr=value] with ',' between the parts")
        cur.i += 1
        cur.skip_ws()
        npos = cur.i
        name = cur.until("=,")
        if not name:
            fail(npos, "empty attribute", "remove the extra ',' (or write the attribute after it)")
        cur.skip_ws()
        raw, eq, vpos = None, -1, cur.i
        if cur.peek() == "=":
            eq = cur.i
            cur.i += 1
            cur.skip_ws()
            vpos = cur.i
            raw = cur.until(",")
        found.append((name, npos, raw, eq, vpos))


def _typed_attrs(raw_attrs, modality: str, fail) -> dict:
    attrs: dict = {}
    for name, npos, raw, eq, vpos in raw_attrs:
        spec = ATTRIBUTES.get(name)
        if spec is None:
            guess = did_you_mean(name, ATTRIBUTES)
            hint = f"did you mean {guess}{'' if ATTRIBUTES[guess].type == FLAG else '='}? " if guess else ""
            plain = slot_kinds(modality, None)
            usable = [s.name for s in ATTRIBUTES.values() if s.kinds & plain]
            fail(npos, f"unknown attribute '{name}'",
                 f"{hint}attributes of {modality} slots: " + ", ".join(usable))
        if name in attrs:
            fail(npos, f"attribute '{name}' is given twice", f"keep one '{name}'")
        try:
            if spec.type == CHOICE and raw and spec.choice_modalities(raw) is None:
                raise unknown_choice(spec, raw, modality)
            attrs[name] = spec.coerce(raw)
        except AttributeProblem as problem:
            if spec.type == FLAG:
                fail(eq, problem.message, problem.fix)
            fail(vpos if raw else (eq if eq >= 0 else npos), problem.message, problem.fix)
    return attrs
