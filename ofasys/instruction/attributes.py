"""Slot attributes, each declared exactly once: type, range, sides, doc — and, from the registry,
the kinds it applies to and (for choices) its values.

Why a table: OFASys read attributes ad hoc (`slot.get_attr('max_length', int)` scattered
over preprocessors), so a misspelt or misplaced attribute was silently ignored. Here the
parser checks every attribute against its `AttributeSpec` — name, value type and range,
the kinds and the side (input = left of `->`, output = right) it means something on —
and later stages read typed values from `Slot.attrs`.

What is declared where: the attribute itself (type, range, sides, doc) here, once; which kinds it
applies to in the modality files (`Modality.attributes`: an attribute applies to a kind iff that
kind's entry in some modality lists it); the values of `preprocess=` and `adaptor=` in the modality
files too (`Modality.preprocess` / `Modality.adaptors`, OFASys's names, each SUPPORTED or with the
reason it is not yet). So adding a modality, or an attribute to a modality, touches no file here.

A choice value is checked in three steps, each with its own message: unknown to every modality ->
"not a valid value" (with a suggestion); known, but to other modalities -> "does not apply to X
slots"; known to the slot's modality but not supported yet -> "not supported yet: <why>" (never
"invalid": the instruction is right, this code can't honour it yet). `default` always means "the
modality's own" and is never refused here (whether a modality can be materialised at all is its
`status`, checked by materialisation).

`ATTRIBUTES` is a plain dict; to add an attribute, add one entry here, list it in the modalities
it applies to, and teach the stage that consumes it. `coerce`, the `check_*` functions and
`check_slot` raise or return `AttributeProblem` without positions; the parser attaches the column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from .modalities import (
    KINDS, MODALITIES, REGISTRY, attribute_kinds, choice_table, describe_kinds, supported_modalities,
)
from .suggest import did_you_mean, suggestion_text

FLAG, INT, FLOAT, STR, CHOICE = "flag", "int", "float", "str", "choice"
INPUT, OUTPUT = "input", "output"
BOTH_SIDES: frozenset[str] = frozenset({INPUT, OUTPUT})
ALL: frozenset[str] = frozenset(KINDS)
"""Every kind some modality declares attributes for."""
DEFAULT = "default"
"""The choice value that means "the modality's own" (same as leaving the attribute out)."""

Value = bool | int | float | str


class AttributeProblem(Exception):
    """An attribute is wrong; carries a message and a fix, the parser adds the position."""

    def __init__(self, message: str, fix: str):
        super().__init__(message, fix)
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of a slot.

    Declared here: name, type, doc, example, range (`min_value`/`max_value`, inclusive), sides, and
    for `choice` attributes `table`, the `Modality` attribute holding its values ("preprocess" or
    "adaptors"). Filled from the registry when `ATTRIBUTES` is built: `kinds`, the kinds it applies
    to, and `choices`, each value with {modality -> None (supported) or why not yet}.
    """

    name: str
    type: str
    doc: str
    example: str = ""
    min_value: float | None = None
    max_value: float | None = None
    sides: frozenset[str] = BOTH_SIDES
    table: str | None = None
    kinds: frozenset[str] = frozenset()
    choices: tuple[tuple[str, Mapping[str, str | None]], ...] = ()

    def choice_modalities(self, value: str) -> Mapping[str, str | None] | None:
        """{modality -> None or why not yet} for a choice value, or None when no modality knows it."""
        return dict(self.choices).get(value)

    def values_for(self, modality: str, allow_unsupported: bool = False) -> list[str]:
        """The choice values a `modality` slot can use: supported ones (and `default`), or all it
        knows with `allow_unsupported`."""
        return [
            value for value, where in self.choices
            if modality in where and (value == DEFAULT or where[modality] is None or allow_unsupported)
        ]

    def value_hint(self) -> str:
        """What a value must look like, for messages: 'a float in [0, 1]'."""
        if self.type == CHOICE:
            return "one of " + ", ".join(c for c, _ in self.choices)
        kind = _TYPE_NAMES[self.type]
        lo, hi = self.min_value, self.max_value
        if lo is not None and hi is not None:
            return f"{kind} in [{_num(lo)}, {_num(hi)}]"
        if lo is not None:
            return f"{kind} >= {_num(lo)}"
        return kind

    def coerce(self, raw: str | None) -> Value:
        """The typed value of `raw` (None = written without '='); raises AttributeProblem."""
        name = self.name
        if self.type == FLAG:
            if raw is not None:
                raise AttributeProblem(
                    f"'{name}' is a flag and takes no value",
                    f"write '{name}' alone, without '={raw}'",
                )
            return True
        if raw is None or raw == "":
            raise AttributeProblem(
                f"'{name}' needs a value ({self.value_hint()})",
                f"write {name}={self.example}",
            )
        if self.type == CHOICE:
            if self.choice_modalities(raw) is None:
                names = [c for c, _ in self.choices]
                raise AttributeProblem(
                    f"'{raw}' is not a valid value of '{name}'",
                    f"{suggestion_text(raw, names)}{name} is {self.value_hint()}",
                )
            return raw
        if self.type == STR:
            return raw
        value: int | float | None = _parse_int(raw) if self.type == INT else _parse_float(raw)
        if value is None:
            raise AttributeProblem(
                f"'{name}={raw}' is not {_TYPE_NAMES[self.type]}",
                f"write {name}={self.example} ({self.value_hint()})",
            )
        if (self.min_value is not None and value < self.min_value) or (
            self.max_value is not None and value > self.max_value
        ):
            raise AttributeProblem(
                f"'{name}={raw}' is out of range",
                f"{name} must be {self.value_hint()}, e.g. {name}={self.example}",
            )
        return value


_TYPE_NAMES = {INT: "an integer", FLOAT: "a number", STR: "a non-empty word"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_DIGITS = frozenset("0123456789")


def _parse_int(raw: str) -> int | None:
    """Plain decimal integer with optional sign. Python's int() also takes '1_000' and
    ' 7', which an instruction should not silently accept."""
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body or not set(body) <= _DIGITS:
        return None
    return int(raw)


def _parse_float(raw: str) -> float | None:
    """Decimal number ('0.3', '.5', '1', '-2.0'); no exponents, 'nan', 'inf' or '_'."""
    body = raw[1:] if raw[:1] in "+-" else raw
    whole, dot, frac = body.partition(".")
    if not (whole or frac) or not set(whole + frac) <= _DIGITS:
        return None
    return float(raw)


def _flag(name: str, doc: str, sides=BOTH_SIDES) -> AttributeSpec:
    return AttributeSpec(name, FLAG, doc, sides=sides)


_SPECS = (
    _flag("no_loss", "Output slot copied as a forced prefix: no loss on its tokens "
          "(e.g. repeating the input before a label).", sides=frozenset({OUTPUT})),
    _flag("closed_set", "Output restricted to the label set seen in the data; generation follows "
          "a trie over the labels.", sides=frozenset({OUTPUT})),
    AttributeSpec("mask_ratio", FLOAT, "Fraction masked at stream time for infilling (spans of "
                  "tokens, or image patches); training only.", "0.3", min_value=0.0, max_value=1.0,
                  sides=frozenset({INPUT})),
    AttributeSpec("noise_ratio", FLOAT, "Fraction of tokens replaced by random ones at stream time "
                  "(on an output: noisy teacher forcing); training only.", "0.2", min_value=0.0,
                  max_value=1.0),
    AttributeSpec("max_length", INT, "Truncate to at most this many tokens (frames for embedded "
                  "sequences such as AUDIO); on an output also caps generation.", "128", min_value=1),
    AttributeSpec("min_length", INT, "Shortest allowed length (tokens or frames); on an output, "
                  "generation may not stop earlier.", "1", min_value=0),
    _flag("uncased", "Lower-case the raw value before tokenising."),
    _flag("no_punctuation", "Strip punctuation from the raw value before tokenising."),
    AttributeSpec("preprocess", CHOICE, "How the raw value is materialised (OFASys's preprocessor "
                  "names); 'default' is the modality's usual one.", "default", table="preprocess"),
    AttributeSpec("adaptor", CHOICE, "Which model adaptor embeds (or generates) the slot (OFASys's "
                  "adaptor names); 'default' is the modality's usual one.", "default", table="adaptors"),
    _flag("add_bos", "Put <BOS> right before this slot (marks the side as explicit: no automatic "
          "BOS/EOS there)."),
    _flag("add_eos", "Put <EOS> right after this slot (marks the side as explicit: no automatic "
          "BOS/EOS there)."),
    _flag("disable_auto_boseos", "No automatic <BOS>/<EOS> on this slot's side."),
    AttributeSpec("length", INT, "Exact number of code tokens of a coded slot (truncates inputs; "
                  "fixes the generated length), e.g. a VQ image.", "256", min_value=1),
    AttributeSpec("sample_rate", INT, "Keep every n-th frame (OFASys motion_6d).", "1", min_value=1),
    _flag("jpeg_frames", "Store a clip's frames as JPEGs (about 4x smaller shards, decoded in every "
          "batch, lossy) instead of uint8 pixels.", sides=frozenset({INPUT})),
)


def _from_registry(spec: AttributeSpec) -> AttributeSpec:
    """`spec` with the kinds it applies to, and its choice values, read from the modality registry."""
    choices = tuple(choice_table(spec.table).items()) if spec.table else ()
    return replace(spec, kinds=attribute_kinds(spec.name), choices=choices)


ATTRIBUTES: Mapping[str, AttributeSpec] = {spec.name: _from_registry(spec) for spec in _SPECS}
"""Every attribute the language knows, by name."""


def check_applicable(spec: AttributeSpec, kinds: frozenset[str], modality: str, side: str) -> None:
    """Raise AttributeProblem when `spec` means nothing on this slot (kind or side)."""
    if not spec.kinds & kinds:
        where = describe_kinds(spec.kinds)
        raise AttributeProblem(
            f"'{spec.name}' does not apply to {modality} slots",
            f"'{spec.name}' applies to {where}; remove it here" if where else
            f"no modality declares '{spec.name}' yet; remove it",
        )
    if side not in spec.sides:
        other = "output (right of ->)" if OUTPUT in spec.sides else "input (left of ->)"
        raise AttributeProblem(
            f"'{spec.name}' does not apply to {side} slots",
            f"'{spec.name}' only applies to {other} slots; move or remove it",
        )


def unknown_choice(spec: AttributeSpec, raw: str, modality: str) -> AttributeProblem:
    """The problem for a choice value no modality knows: a suggestion, and the values this slot can use.

    A value of another choice attribute (`preprocess=image_resnet`, an adaptor) is pointed there."""
    usable = ", ".join(spec.values_for(modality))
    for other in ATTRIBUTES.values():
        where = other.choice_modalities(raw) if other is not spec and other.type == CHOICE else None
        if where and modality in where:
            return AttributeProblem(
                f"'{raw}' is not a valid value of '{spec.name}'",
                f"'{raw}' is a value of '{other.name}': did you mean {other.name}={raw}? "
                f"{spec.name} of {modality} slots is one of: {usable}",
            )
    guess = did_you_mean(raw, [c for c, _ in spec.choices])
    hint = f"did you mean {guess}? " if guess else ""
    return AttributeProblem(
        f"'{raw}' is not a valid value of '{spec.name}'",
        f"{hint}{spec.name} of {modality} slots is one of: {usable}",
    )


def check_choice_modality(spec: AttributeSpec, value: str, modality: str, allow_unsupported: bool = False) -> None:
    """Raise AttributeProblem when a known choice value belongs to other modalities only."""
    where = spec.choice_modalities(value) or {}
    if modality in where:
        return
    owners = ", ".join(m for m in MODALITIES if m in where)
    raise AttributeProblem(
        f"{spec.name}={value} does not apply to {modality} slots",
        f"{spec.name}={value} is for {owners}; for {modality} use one of: "
        + ", ".join(spec.values_for(modality, allow_unsupported)),
    )


def unsupported_reason(spec: AttributeSpec, value: str, modality: str) -> str | None:
    """Why `value` of `spec` is not supported yet on a `modality` slot, or None when it is (or is
    `default`, which means the modality's own: its support is the modality's `status`)."""
    if value == DEFAULT:
        return None
    return (spec.choice_modalities(value) or {}).get(modality)


def not_supported_problem(spec: AttributeSpec, value: str, modality: str, reason: str) -> AttributeProblem:
    """The "not supported yet" problem for `spec=value` on a `modality` slot, with what works instead."""
    message = f"{spec.name}={value} is {reason}" if reason.startswith("not supported yet") else \
        f"{spec.name}={value} is not supported yet: {reason}"
    if REGISTRY[modality].status is not None:
        fix = (f"{modality} slots are {REGISTRY[modality].status}; the supported modalities are "
               + ", ".join(supported_modalities()))
    else:
        others = [v for v in spec.values_for(modality) if v != DEFAULT]
        fix = f"leave {spec.name} out (the default is supported)" + (
            f", or use {spec.name}=" + f" or {spec.name}=".join(others) if others else "")
    return AttributeProblem(message, fix)


def check_slot(attrs: Mapping[str, Value]) -> tuple[str, AttributeProblem] | None:
    """Cross-attribute consistency of one slot: (attribute to blame, problem) or None.

    Why: `adaptor=image_vqgan` embeds VQ codes, so feeding it pixels (no
    `preprocess=image_vqgan`) would fail late and obscurely; and a minimum above the
    maximum length can never be met.
    """
    pre, ada = attrs.get("preprocess"), attrs.get("adaptor")
    if ada == "image_vqgan" and pre != "image_vqgan":
        return "adaptor", AttributeProblem(
            "adaptor=image_vqgan needs VQ codes, but the image is not preprocessed into codes",
            "add preprocess=image_vqgan to this slot",
        )
    if pre == "image_vqgan" and ada not in (None, "default", "image_vqgan"):
        return "adaptor", AttributeProblem(
            f"adaptor={ada} cannot embed the VQ codes made by preprocess=image_vqgan",
            "use adaptor=image_vqgan (or leave adaptor out)",
        )
    lo, hi = attrs.get("min_length"), attrs.get("max_length")
    if lo is not None and hi is not None and lo > hi:
        return "min_length", AttributeProblem(
            f"min_length={lo} is larger than max_length={hi}",
            "make min_length <= max_length",
        )
    return None
