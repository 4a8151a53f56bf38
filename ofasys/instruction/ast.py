"""The parsed form of an instruction: frozen, hashable, positions kept.

Why keep positions: every later complaint about an instruction (a column the data lacks,
an attribute a stage cannot honour) can then point at the exact place in the text the
user wrote, through `InstructionError`.

`pos` everywhere is a 0-based char offset into the owning template's `source` (the text
of that template alone, between `|||` separators, unstripped).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Iterator

from .boseos import resolve_side
from .errors import InstructionError
from .nodes import Attrs, Group, Item, Slot, Special, Text, walk_slots

__all__ = ["Attrs", "Group", "Instruction", "Item", "SIDES", "Slot", "Special", "Template", "Text"]

SIDES = ("input", "output")


@dataclass(frozen=True)
class Template:
    """One `inputs -> outputs` template. Left feeds the encoder, right the decoder."""

    source: str
    inputs: tuple[Item, ...]
    outputs: tuple[Item, ...]

    def resolved_inputs(self) -> tuple[Item, ...]:
        """Inputs with `<BOS>`/`<EOS>` placed; the rule is in `boseos.resolve_side`."""
        return resolve_side(self.inputs)

    def resolved_outputs(self) -> tuple[Item, ...]:
        """Outputs with `<BOS>`/`<EOS>` placed; the rule is in `boseos.resolve_side`."""
        return resolve_side(self.outputs)

    def slots(self) -> Iterator[tuple[str, Slot]]:
        """(side, slot) in source order, side in {"input", "output"}, groups included."""
        for side, items in zip(SIDES, (self.inputs, self.outputs)):
            for slot in walk_slots(items):
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
