"""The parsed form of an instruction: frozen, hashable, positions kept.

Why keep positions: every later complaint about an instruction (a column the data lacks,
an attribute a stage cannot honour) can then point at the exact place in the text the
user wrote, through `InstructionError`.

`pos` everywhere is a 0-based char offset into the owning template's `source` (the text
of that template alone, between `|||` separators, unstripped).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Union

from .attributes import Value
from .errors import InstructionError
from .modalities import is_text_like


class Attrs(Mapping[str, Value]):
    """Read-only, hashable, ordered mapping of a slot's typed attributes.

    Compares equal to a plain dict with the same items, so tests and callers can write
    `slot.attrs == {"no_loss": True}`.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Value] | Iterable[tuple[str, Value]] = ()):
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        object.__setattr__(self, "_items", pairs)

    def __getitem__(self, key: str) -> Value:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"Attrs({dict(self._items)!r})"


@dataclass(frozen=True)
class Text:
    """Prompt text, whitespace-normalised (runs collapsed to one space, ends stripped).
    On the output side it is a forced prefix that carries no loss."""

    text: str
    pos: int


@dataclass(frozen=True)
class Special:
    """`<BOS>` or `<EOS>`. `implicit` marks ones inserted by `resolved_inputs/outputs`
    (automatic, or from add_bos/add_eos) rather than written in the template."""

    name: str
    pos: int
    implicit: bool = False


@dataclass(frozen=True)
class Slot:
    """`[MODALITY:column,attr,attr=value]`. `column` None = an output to generate, or a
    value supplied by position. `attrs` holds typed values (flags are True)."""

    modality: str
    column: str | None
    attrs: Mapping[str, Value] = field(default_factory=Attrs)
    pos: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))

    def get(self, name: str, default: Value | None = None) -> Value | None:
        return self.attrs.get(name, default)

    @property
    def no_loss(self) -> bool:
        return bool(self.attrs.get("no_loss", False))

    @property
    def closed_set(self) -> bool:
        return bool(self.attrs.get("closed_set", False))

    @property
    def preprocess(self) -> str | None:
        return self.attrs.get("preprocess")  # type: ignore[return-value]

    @property
    def is_text_like(self) -> bool:
        """A run of vocabulary ids that takes BOS/EOS (see modalities.is_text_like)."""
        return is_text_like(self.modality, self.preprocess)


@dataclass(frozen=True)
class Group:
    """`( ... )*`: items repeated once per element of the list-valued columns inside."""

    items: tuple["Item", ...]
    pos: int


Item = Union[Text, Special, Slot, Group]
SIDES = ("input", "output")


def _walk_slots(items: Iterable[Item]) -> Iterator[Slot]:
    for item in items:
        if isinstance(item, Slot):
            yield item
        elif isinstance(item, Group):
            yield from _walk_slots(item.items)


@dataclass(frozen=True)
class Template:
    """One `inputs -> outputs` template. Left feeds the encoder, right the decoder."""

    source: str
    inputs: tuple[Item, ...]
    outputs: tuple[Item, ...]

    def resolved_inputs(self) -> tuple[Item, ...]:
        """Inputs with `<BOS>`/`<EOS>` placed; the rule is in `boseos.resolve_side`."""
        from .boseos import resolve_side

        return resolve_side(self.inputs)

    def resolved_outputs(self) -> tuple[Item, ...]:
        """Outputs with `<BOS>`/`<EOS>` placed; the rule is in `boseos.resolve_side`."""
        from .boseos import resolve_side

        return resolve_side(self.outputs)

    def slots(self) -> Iterator[tuple[str, Slot]]:
        """(side, slot) in source order, side in {"input", "output"}, groups included."""
        for side, items in zip(SIDES, (self.inputs, self.outputs)):
            for slot in _walk_slots(items):
                yield side, slot


@dataclass(frozen=True)
class Instruction:
    """A whole instruction: one or more templates separated by `|||` (a task may sample a
    template per batch)."""

    source: str
    templates: tuple[Template, ...]

    def columns(self) -> tuple[str, ...]:
        """Named columns in first-appearance order, unique."""
        seen: dict[str, None] = {}
        for template in self.templates:
            for _, slot in template.slots():
                if slot.column is not None:
                    seen.setdefault(slot.column)
        return tuple(seen)

    def check_columns(self, available: Iterable[str], sides: Iterable[str] = SIDES) -> None:
        """Raise InstructionError at the first slot (on `sides`) whose column the data lacks.

        Pass `sides=("input",)` at inference, where outputs are to be generated.
        """
        have = list(dict.fromkeys(available))
        wanted = set(sides)
        for template in self.templates:
            for side, slot in template.slots():
                if side in wanted and slot.column is not None and slot.column not in have:
                    close = difflib.get_close_matches(slot.column, have, n=1, cutoff=0.6)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    listing = ", ".join(have) if have else "(no columns)"
                    raise InstructionError(
                        f"column '{slot.column}' is not in the data; the data has: {listing}",
                        template.source,
                        slot.pos,
                        f"{hint}rename the slot's column to one the data has, or add "
                        f"'{slot.column}' to the data",
                    )
