"""Slot attributes, each declared exactly once: type, where it applies, range, doc.

Why a table: OFASys read attributes ad hoc (`slot.get_attr('max_length', int)` scattered
over preprocessors), so a misspelt or misplaced attribute was silently ignored. Here the
parser checks every attribute against its `AttributeSpec` — name, value type and range,
the modalities and the side (input = left of `->`, output = right) it means something on —
and later stages read typed values from `Slot.attrs`.

`ATTRIBUTES` is a plain dict; to add an attribute, add one entry (and teach the stage
that consumes it). `coerce` and `check_slot` raise `AttributeProblem` without positions;
the parser attaches the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .modalities import MODALITIES, TEXT_LIKE, VQ_IMAGE, describe_kinds
from .suggest import suggestion_text

FLAG, INT, FLOAT, STR, CHOICE = "flag", "int", "float", "str", "choice"
INPUT, OUTPUT = "input", "output"
BOTH_SIDES: frozenset[str] = frozenset({INPUT, OUTPUT})
ALL: frozenset[str] = frozenset(MODALITIES) | {VQ_IMAGE}

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

    `modalities` holds modality names and/or `VQ_IMAGE`. For `choice` attributes,
    `choices` pairs each allowed value with the kinds it applies to (so
    `preprocess=image_vqgan` is refused on TEXT). `min_value`/`max_value` are inclusive.
    """

    name: str
    type: str
    modalities: frozenset[str]
    doc: str
    example: str = ""
    choices: tuple[tuple[str, frozenset[str]], ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    sides: frozenset[str] = BOTH_SIDES

    def choice_kinds(self, value: str) -> frozenset[str] | None:
        """Kinds a choice value applies to, or None when it is not a choice."""
        return dict(self.choices).get(value)

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
            if self.choice_kinds(raw) is None:
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


def _flag(name: str, modalities: frozenset[str], doc: str, sides=BOTH_SIDES) -> AttributeSpec:
    return AttributeSpec(name, FLAG, modalities, doc, sides=sides)


_TOKEN_TEXT = frozenset({"TEXT", "STRUCT", "PHONE"})
_CASED_TEXT = frozenset({"TEXT", "STRUCT", "CATEGORY"})
_SEQUENCES = frozenset({"TEXT", "STRUCT", "PHONE", "AUDIO", "VIDEO", "MOTION"})

PREPROCESS_CHOICES: tuple[tuple[str, frozenset[str]], ...] = (
    ("default", ALL),
    ("text_phone", frozenset({"TEXT"})),
    ("image_vqgan", frozenset({"IMAGE"})),
    ("image_resnet", frozenset({"IMAGE"})),
    ("motion_6d", frozenset({"MOTION"})),
)
ADAPTOR_CHOICES: tuple[tuple[str, frozenset[str]], ...] = (
    ("default", ALL),
    ("text", frozenset({"TEXT", "BOX", "STRUCT", "PHONE", "CATEGORY"})),
    ("image_resnet", frozenset({"IMAGE"})),
    ("image_patch_embed", frozenset({"IMAGE"})),
    ("image_vqgan", frozenset({"IMAGE"})),
    ("audio_fbank", frozenset({"AUDIO"})),
    ("audio_tgt_fbank", frozenset({"AUDIO"})),
    ("video_image_sequence", frozenset({"VIDEO"})),
    ("motion_6d", frozenset({"MOTION"})),
)

_SPECS = (
    _flag("no_loss", TEXT_LIKE, "Output slot copied as a forced prefix: no loss on its tokens "
          "(e.g. repeating the input before a label).", sides=frozenset({OUTPUT})),
    _flag("closed_set", frozenset({"TEXT", "CATEGORY"}), "Output restricted to the label set "
          "seen in the data; generation follows a trie over the labels.", sides=frozenset({OUTPUT})),
    AttributeSpec("mask_ratio", FLOAT, _TOKEN_TEXT | {"IMAGE", VQ_IMAGE},
                  "Fraction masked at stream time for infilling (spans of tokens, or image "
                  "patches); training only.", "0.3", min_value=0.0, max_value=1.0,
                  sides=frozenset({INPUT})),
    AttributeSpec("noise_ratio", FLOAT, _TOKEN_TEXT, "Fraction of tokens replaced by random "
                  "ones at stream time (on an output: noisy teacher forcing); training only.",
                  "0.2", min_value=0.0, max_value=1.0),
    AttributeSpec("max_length", INT, _SEQUENCES, "Truncate to at most this many tokens "
                  "(frames for AUDIO/VIDEO/MOTION); on an output also caps generation.",
                  "128", min_value=1),
    AttributeSpec("min_length", INT, _SEQUENCES, "Shortest allowed length (tokens or frames); "
                  "on an output, generation may not stop earlier.", "1", min_value=0),
    _flag("uncased", _CASED_TEXT, "Lower-case the raw value before tokenising."),
    _flag("no_punctuation", _CASED_TEXT, "Strip punctuation from the raw value before tokenising."),
    AttributeSpec("preprocess", CHOICE, ALL, "How the raw value is materialised; 'default' "
                  "is the modality's usual one.", "image_vqgan", choices=PREPROCESS_CHOICES),
    AttributeSpec("adaptor", CHOICE, ALL, "Which model adaptor embeds (or generates) the slot; "
                  "'default' is the modality's usual one.", "image_vqgan", choices=ADAPTOR_CHOICES),
    _flag("add_bos", TEXT_LIKE, "Put <BOS> right before this slot (marks the side as explicit: "
          "no automatic BOS/EOS there)."),
    _flag("add_eos", TEXT_LIKE, "Put <EOS> right after this slot (marks the side as explicit: "
          "no automatic BOS/EOS there)."),
    _flag("disable_auto_boseos", ALL, "No automatic <BOS>/<EOS> on this slot's side."),
    AttributeSpec("length", INT, frozenset({VQ_IMAGE}), "Exact number of VQ code tokens of "
                  "the image (truncates inputs; fixes the generated length).", "256", min_value=1),
    AttributeSpec("sample_rate", INT, frozenset({"MOTION"}), "Keep every n-th motion frame "
                  "(OFASys motion_6d).", "1", min_value=1),
)

ATTRIBUTES: Mapping[str, AttributeSpec] = {spec.name: spec for spec in _SPECS}
"""Every attribute the language knows, by name."""


def check_applicable(spec: AttributeSpec, kinds: frozenset[str], modality: str, side: str) -> None:
    """Raise AttributeProblem when `spec` means nothing on this slot (kind or side)."""
    if not spec.modalities & kinds:
        raise AttributeProblem(
            f"'{spec.name}' does not apply to {modality} slots",
            f"'{spec.name}' applies to {describe_kinds(spec.modalities)}; remove it here",
        )
    if side not in spec.sides:
        other = "output (right of ->)" if OUTPUT in spec.sides else "input (left of ->)"
        raise AttributeProblem(
            f"'{spec.name}' does not apply to {side} slots",
            f"'{spec.name}' only applies to {other} slots; move or remove it",
        )


def check_choice_kind(spec: AttributeSpec, value: str, kinds: frozenset[str], modality: str) -> None:
    """Raise AttributeProblem when a valid choice value is meant for another modality."""
    allowed = spec.choice_kinds(value) or frozenset()
    if allowed & kinds:
        return
    fits = [c for c, k in spec.choices if k & kinds]
    raise AttributeProblem(
        f"{spec.name}={value} does not apply to {modality} slots",
        f"{spec.name}={value} is for {describe_kinds(allowed)}; for {modality} use one of: "
        + ", ".join(fits),
    )


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
