"""The sequence lengths a sample occupies in the model, and the limit they must meet.

The universal model has learned positions, so it refuses an encoder sequence longer than
`max_positions` and a decoder input longer than `max_positions` (ofasys/model/universal.py). One
such sample in the shards stops training at the first batch that draws it, possibly hours in. So
materialisation counts, for every template of the instruction, what the collator will build from
the sample (ofasys/data/collate.py) and rejects a sample that can't fit, with the fix in the reason.

What is counted, exactly as collation builds it:
- encoder: every token of every token run (prompt text, `<BOS>`/`<EOS>` written or added by the
  template, the ids of token slots) plus, per embedded slot (IMAGE, AUDIO, ...), the positions its
  adaptor makes in the model (`Modality.encoder_positions`: the image grid at the task's resolution,
  the subsampled audio frames). `mask_ratio` span masking only ever shortens a run, so the unmasked
  count is the bound.
- decoder: the decoder input, `<bos>` (added when the template does not start with it) followed by
  the output side's tokens (a frame output: one placeholder per stored frame row); the final token
  of the sequence (normally `<eos>`) is only ever a target, so it takes no position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ofasys.data.plan import special_id
from ofasys.data.members import REPEAT_LENGTHS, slot_handler, slot_member
from ofasys.data.rows import RowRejected
from ofasys.instruction.ast import Group, Instruction, Slot, Special, Template, Text
from ofasys.vocab import UnifiedVocab

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ofasys.model.config import ModelConfig


@dataclass(frozen=True)
class Positions:
    """What one sample occupies under one template."""

    encoder: int
    """Encoder positions: token runs plus what the embedded slots' adaptors make."""
    decoder: int
    """Decoder positions: the decoder input (`<bos>` + outputs; the final token is only a target)."""
    slots: tuple[tuple[str, Slot, int], ...]
    """(side, slot, positions) of every slot occurrence, in template order."""


class PositionCounter:
    """Counts `Positions` of materialised arrays; prompt text is tokenized once per distinct text."""

    def __init__(self, instruction: Instruction, vocab: UnifiedVocab, model: "ModelConfig"):
        self.instruction = instruction
        self.vocab = vocab
        self.model = _AdaptorCache(model)
        self._text: dict[str, tuple[int, ...]] = {}

    def _text_ids(self, text: str) -> tuple[int, ...]:
        ids = self._text.get(text)
        if ids is None:  # as Collator.text_ids: blank prompt text is no tokens
            ids = self._text[text] = tuple(self.vocab.encode_text(text)) if text.strip() else ()
        return ids

    def count(self, template: Template, arrays: Mapping[str, np.ndarray],
              meta: Mapping[str, Mapping] | None = None) -> Positions:
        """`meta` (the sample's per-column meta) gives a repeat group's number of repetitions."""
        slots: list[tuple[str, Slot, int]] = []
        encoder = 0
        for item in template.resolved_inputs():
            if isinstance(item, Text):
                encoder += len(self._text_ids(item.text))
            elif isinstance(item, Special):
                encoder += 1
            elif isinstance(item, Slot):
                n = slot_handler(item).encoder_positions(arrays[_key(item)], item.attrs, self.model)
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
            elif isinstance(item, Slot) and _token_run(item):
                ids = arrays[_key(item)]
                head, n = (int(ids[0]) if len(ids) else None), len(ids)
                slots.append(("output", item, n))
            elif isinstance(item, Slot) and slot_handler(item).frame_output:  # one <mask> step per stored row
                handler = slot_handler(item)
                head, n = self.vocab.mask, handler.frame_steps(arrays[_key(item)])
                slots.append(("output", item, n))
            elif isinstance(item, Group):  # its slots' runs hold every repetition; its prompt text repeats
                head, n = self._group_positions(item, arrays, meta or {}, slots)
            else:  # not materialisable, refused by plan_members before any row is read
                raise NotImplementedError(f"counting positions of output item {item!r}")
            if first is None and n:
                first = head
            seq += n
        if first != self.vocab.bos:
            seq += 1  # the collator prepends <bos>
        return Positions(encoder, max(seq - 1, 0), tuple(slots))

    def _group_positions(self, group: Group, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Mapping],
                         slots: list) -> tuple[int | None, int]:
        """(first id, positions) of a repeat group: every slot's stored run (all repetitions) plus the
        group's prompt text and specials once per repetition."""
        members = [i for i in group.items if isinstance(i, Slot)]
        runs = [arrays[_key(s)] for s in members]
        repetitions = len(meta.get(members[0].column, {}).get(REPEAT_LENGTHS, [])) if members else 0
        n = sum(len(r) for r in runs)
        for s, r in zip(members, runs):
            slots.append(("output", s, len(r)))
        fixed = sum(len(self._text_ids(i.text)) if isinstance(i, Text) else 1
                    for i in group.items if isinstance(i, (Text, Special)))
        head = None
        if repetitions:
            first = group.items[0]
            if isinstance(first, Text):
                ids = self._text_ids(first.text)
                head = ids[0] if ids else None
            elif isinstance(first, Special):
                head = special_id(self.vocab, first)
            else:
                head = int(runs[0][0]) if len(runs[0]) else None
        return head, n + fixed * repetitions

    def counts(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Mapping] | None = None) -> list[Positions]:
        """`Positions` under each template, in template order."""
        return [self.count(t, arrays, meta) for t in self.instruction.templates]


class _AdaptorCache:
    """A `ModelConfig` whose typed adaptor settings are built once per modality: building them
    checks field types (typing.get_type_hints), which cost more than the rest of a row's counting."""

    def __init__(self, model: "ModelConfig"):
        self._model = model
        self._adaptors: dict[str, object] = {}

    def adaptor(self, modality: str):
        if modality not in self._adaptors:
            self._adaptors[modality] = self._model.adaptor(modality)
        return self._adaptors[modality]

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _key(slot: Slot) -> str:
    return slot_member(slot)


def _token_run(slot: Slot) -> bool:
    return slot_handler(slot).token_run


def sample_positions(counts: Sequence[Positions]) -> tuple[int, int]:
    """(encoder, decoder): the most positions a sample takes on each side under any of its templates,
    the row of the sample in its split's lengths file. A batch uses one template, so these bound what
    collation pads it to (equal to it when the instruction has one template)."""
    return (max((c.encoder for c in counts), default=0), max((c.decoder for c in counts), default=0))


class PositionCheck:
    """Counts a materialised sample's positions and rejects one that some template would make too
    long for the model. With `enforce=False` it only counts (no model limit to check against)."""

    def __init__(self, instruction: Instruction, vocab: UnifiedVocab, model: "ModelConfig", enforce: bool = True):
        self.max_positions = model.max_positions
        self.enforce = enforce
        self.counter = PositionCounter(instruction, vocab, model)
        self.templates = len(instruction.templates)

    def __call__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Mapping] | None = None) -> list[Positions]:
        """The per-template counts of `arrays`, or RowRejected naming the side, the count, the limit
        and the fix (the largest TEXT-like slot of that side, with the max_length that would fit)."""
        counts = self.counter.counts(arrays, meta)
        for side in ("encoder", "decoder") if self.enforce else ():
            worst = max(range(len(counts)), key=lambda i: getattr(counts[i], side))
            n = getattr(counts[worst], side)
            if n > self.max_positions:
                column, fix = self._fix(counts[worst], side, n)
                where = f" (template {worst + 1} of {self.templates})" if self.templates > 1 else ""
                raise RowRejected(
                    column,
                    f"{side} side is {n} tokens{where}, model.max_positions is {self.max_positions}; {fix}",
                )
        return counts

    def _fix(self, pos: Positions, side: str, n: int) -> tuple[str, str]:
        wanted = "input" if side == "encoder" else "output"
        mine = [(slot, k) for s, slot, k in pos.slots if s == wanted]
        raise_it = "raise model.max_positions"
        # the TEXT-like column holding the most positions on this side (summed over its occurrences)
        totals: dict[tuple[str, str], list] = {}
        for slot, k in mine:
            if _token_run(slot) and slot.column and "max_length" in slot_handler(slot).materialise_attrs:
                entry = totals.setdefault((slot.modality, slot.column), [0, 0, slot])
                entry[0] += k
                entry[1] += 1
        excess = n - self.max_positions
        if totals:
            (modality, column), (held, uses, slot) = max(totals.items(), key=lambda kv: (kv[1][0], kv[0]))
            per_use = held // uses
            fit = per_use - -(-excess // uses)  # ceil(excess / uses) fewer positions per occurrence
            if fit >= 1:
                verb = "lower max_length= of" if slot.attrs.get("max_length") else f"add max_length={fit} to"
                target = f" to {fit}" if slot.attrs.get("max_length") else ""
                return column, f"{verb} the [{modality}:{column}] slot{target} or {raise_it}"
        embedded = [(slot, k) for slot, k in mine if not _token_run(slot)]
        if embedded:  # the embedded slot taking the most positions
            slot = max(embedded, key=lambda sk: sk[1])[0]
            return slot.column or "", f"{raise_it} or {slot_handler(slot).shrink_hint}"
        column = next((slot.column for slot, _ in mine if slot.column), "")
        return column, raise_it


__all__ = ["PositionCheck", "PositionCounter", "Positions", "sample_positions"]
