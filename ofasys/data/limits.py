"""The sequence lengths a sample occupies in the model, and the limit they must meet.

The universal model has learned positions, so it refuses an encoder sequence longer than
`max_positions` and a decoder input longer than `max_positions` (ofasys/model/universal.py). One
such sample in the shards stops training at the first batch that draws it, possibly hours in. So
materialisation counts, for every template of the instruction, what the collator will build from
the sample (ofasys/data/collate.py) and rejects a sample that can't fit, with the fix in the reason.

What is counted, exactly as collation builds it:
- encoder: every token of every token run (prompt text, `<BOS>`/`<EOS>` written or added by the
  template, TEXT/BOX/CATEGORY ids) plus `image_tokens` per IMAGE slot (the image adaptor's grid at
  the task's resolution, `ModelConfig.image_tokens(image_size)`). `mask_ratio` span masking only
  ever shortens a run, so the unmasked count is the bound.
- decoder: the decoder input, `<bos>` (added when the template does not start with it) followed by
  the output side's tokens; the final token of the sequence (normally `<eos>`) is only ever a
  target, so it takes no position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ofasys.data.plan import special_id
from ofasys.data.rows import RowRejected
from ofasys.instruction.ast import Instruction, Slot, Special, Template, Text
from ofasys.modalities import TOKEN_MODALITIES
from ofasys.vocab import UnifiedVocab


@dataclass(frozen=True)
class Positions:
    """What one sample occupies under one template."""

    encoder: int
    """Encoder positions: token runs plus image tokens."""
    decoder: int
    """Decoder positions: the decoder input (`<bos>` + outputs; the final token is only a target)."""
    slots: tuple[tuple[str, Slot, int], ...]
    """(side, slot, positions) of every slot occurrence, in template order."""


class PositionCounter:
    """Counts `Positions` of materialised arrays; prompt text is tokenized once per distinct text."""

    def __init__(self, instruction: Instruction, vocab: UnifiedVocab, image_tokens: int):
        self.instruction = instruction
        self.vocab = vocab
        self.image_tokens = image_tokens
        self._text: dict[str, tuple[int, ...]] = {}

    def _text_ids(self, text: str) -> tuple[int, ...]:
        ids = self._text.get(text)
        if ids is None:  # as Collator.text_ids: blank prompt text is no tokens
            ids = self._text[text] = tuple(self.vocab.encode_text(text)) if text.strip() else ()
        return ids

    def count(self, template: Template, arrays: Mapping[str, np.ndarray]) -> Positions:
        slots: list[tuple[str, Slot, int]] = []
        encoder = 0
        for item in template.resolved_inputs():
            if isinstance(item, Text):
                encoder += len(self._text_ids(item.text))
            elif isinstance(item, Special):
                encoder += 1
            elif isinstance(item, Slot):
                n = self.image_tokens if item.modality == "IMAGE" else len(arrays[_key(item)])
                slots.append(("input", item, n))
                encoder += n
        seq = 0
        first: int | None = None
        for item in template.resolved_outputs():
            if isinstance(item, Text):
                ids = self._text_ids(item.text)
                head, n = (ids[0] if ids else None), len(ids)
            elif isinstance(item, Special):
                head, n = special_id(self.vocab, item), 1
            elif isinstance(item, Slot) and item.modality in TOKEN_MODALITIES:
                ids = arrays[_key(item)]
                head, n = (int(ids[0]) if len(ids) else None), len(ids)
                slots.append(("output", item, n))
            else:  # not materialisable, refused by plan_members before any row is read
                raise NotImplementedError(f"counting positions of output item {item!r}")
            if first is None and n:
                first = head
            seq += n
        if first != self.vocab.bos:
            seq += 1  # the collator prepends <bos>
        return Positions(encoder, max(seq - 1, 0), tuple(slots))

    def counts(self, arrays: Mapping[str, np.ndarray]) -> list[Positions]:
        """`Positions` under each template, in template order."""
        return [self.count(t, arrays) for t in self.instruction.templates]


def _key(slot: Slot) -> str:
    return f"{slot.column}.{slot.modality.lower()}"


@dataclass(frozen=True)
class PositionLimit:
    """The longest encoder sequence and decoder input a model accepts."""

    max_positions: int
    """`ModelConfig.max_positions`."""
    image_tokens: int = 0
    """Encoder positions of one IMAGE slot at the task's resolution (`ModelConfig.image_tokens`)."""

    def __post_init__(self) -> None:
        if self.max_positions < 1:
            raise ValueError(f"max_positions must be >= 1, got {self.max_positions}")
        if self.image_tokens < 0:
            raise ValueError(f"image_tokens must be >= 0, got {self.image_tokens}")


class PositionCheck:
    """Rejects a materialised sample that some template would make too long for the model."""

    def __init__(self, instruction: Instruction, vocab: UnifiedVocab, limit: PositionLimit):
        self.limit = limit
        self.counter = PositionCounter(instruction, vocab, limit.image_tokens)
        self.templates = len(instruction.templates)

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> list[Positions]:
        """The per-template counts of `arrays`, or RowRejected naming the side, the count, the limit
        and the fix (the largest TEXT-like slot of that side, with the max_length that would fit)."""
        counts = self.counter.counts(arrays)
        for side in ("encoder", "decoder"):
            worst = max(range(len(counts)), key=lambda i: getattr(counts[i], side))
            n = getattr(counts[worst], side)
            if n > self.limit.max_positions:
                column, fix = self._fix(counts[worst], side, n)
                where = f" (template {worst + 1} of {self.templates})" if self.templates > 1 else ""
                raise RowRejected(
                    column,
                    f"{side} side is {n} tokens{where}, model.max_positions is {self.limit.max_positions}; {fix}",
                )
        return counts

    def _fix(self, pos: Positions, side: str, n: int) -> tuple[str, str]:
        wanted = "input" if side == "encoder" else "output"
        mine = [(slot, k) for s, slot, k in pos.slots if s == wanted]
        raise_it = "raise model.max_positions"
        # the TEXT-like column holding the most positions on this side (summed over its occurrences)
        totals: dict[tuple[str, str], list] = {}
        for slot, k in mine:
            if slot.modality in ("TEXT", "CATEGORY") and slot.column:
                entry = totals.setdefault((slot.modality, slot.column), [0, 0, slot])
                entry[0] += k
                entry[1] += 1
        excess = n - self.limit.max_positions
        if totals:
            (modality, column), (held, uses, slot) = max(totals.items(), key=lambda kv: (kv[1][0], kv[0]))
            per_use = held // uses
            fit = per_use - -(-excess // uses)  # ceil(excess / uses) fewer positions per occurrence
            if fit >= 1:
                verb = "lower max_length= of" if slot.attrs.get("max_length") else f"add max_length={fit} to"
                target = f" to {fit}" if slot.attrs.get("max_length") else ""
                return column, f"{verb} the [{modality}:{column}] slot{target} or {raise_it}"
        images = [slot for slot, k in mine if slot.modality == "IMAGE"]
        if images:
            return images[0].column or "", f"{raise_it} or lower the task's image_size"
        column = next((slot.column for slot, _ in mine if slot.column), "")
        return column, raise_it


__all__ = ["PositionCheck", "PositionCounter", "PositionLimit", "Positions"]
