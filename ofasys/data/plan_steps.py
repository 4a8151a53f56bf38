"""The steps an `OutputPlan` walks (see `ofasys.data.plan`): forced ids, a modality's `OutputStep`, a
repeat group's `Repeat`; the constants that bound them, and how a template's prompt items become ids.
Kept apart so that the plan (walking, decoding) and its builder (template -> steps) share them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ofasys.data.members import slot_member
from ofasys.instruction.ast import Slot, Special, Template
from ofasys.modalities import Modality, OutputStep
from ofasys.vocab import UnifiedVocab

DEFAULT_MAX_TEXT_TOKENS = 64
"""Generation cap for a TEXT output without `max_length` when nothing better is known."""


class PlanError(ValueError):
    """The template's output side can't be generated as a plan (e.g. two slots with no separator)."""


@dataclass(frozen=True)
class Forced:
    """Ids the plan emits as they are (prompt text, specials, a `no_loss` slot's own ids)."""

    tokens: tuple[int, ...]
    kind: str = "forced"
    column: str | None = None


@dataclass(frozen=True)
class Repeat:
    """A repeat group's plan: `steps` once per repetition, at most `max_count` repetitions."""

    steps: tuple[Any, ...]
    first: tuple[int, ...]
    """Ids that start a repetition."""
    exit: tuple[int, ...]
    """Ids that may follow the group (not consumed by it)."""
    max_count: int
    columns: tuple[str, ...]
    handlers: Mapping[int, Modality]
    kind: str = "repeat"

    @property
    def column(self) -> str:
        return self.columns[0]


Step = Forced | OutputStep | Repeat

DEFAULT_MAX_REPEATS = 16
"""Generation cap on a repeat group's repetitions when nothing better is known (the train split's
largest count, recorded in the manifest, is passed as `assets[MAX_REPEATS]`)."""
MAX_REPEATS = "max_repeats"
SPAN = "span"
"""Key of a walked repetition: (start, end) of its ids in `generated` (its score's ids)."""
"""Key of `assets`: the largest number of repetitions a repeat group may generate."""


def _text_ids(vocab: UnifiedVocab, cache: dict[str, tuple[int, ...]], text: str) -> tuple[int, ...]:
    if text not in cache:
        cache[text] = tuple(vocab.encode_text(text)) if text.strip() else ()
    return cache[text]


def special_id(vocab: UnifiedVocab, item: Special) -> int:
    return vocab.bos if item.name == "BOS" else vocab.eos


def _max_tokens(steps: Sequence[Step]) -> int:
    total = 0
    for s in steps:
        if s.kind == "forced":
            total += len(s.tokens)
        elif s.kind in ("run", "frames"):
            total += s.max_length + 1
        elif s.kind == "fixed":
            total += s.length
        elif s.kind == "closed":
            total += s.trie.depth() + 1
        elif s.kind == "repeat":
            total += s.max_count * _max_tokens(s.steps) + 1
    return total


def _first_ids(step: Step) -> tuple[int, ...]:
    """The ids a step may start with."""
    if step.kind == "forced":
        return (step.tokens[0],)
    if step.kind in ("fixed", "run", "frames"):
        return tuple(step.allowed)
    if step.kind == "closed":
        return tuple(sorted(step.trie.children))
    return step.first


def _slot_ids(slot: Slot, arrays: Mapping[str, Any] | None, template: Template) -> tuple[int, ...]:
    key = slot_member(slot)
    if arrays is None or key not in arrays:
        raise PlanError(
            f"the no_loss slot '{slot.column}' at {slot.pos} of {template.source!r} is forced from the sample, "
            f"but the sample has no '{key}' array"
        )
    return tuple(int(t) for t in arrays[key])
