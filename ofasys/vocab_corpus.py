"""What a task gives the unified vocabulary: the text its BPE is trained on and the phones of its
phone block, read from the values of the task's slots (never from its prompt wording).

Prompts stay out of the corpus on purpose: the BPE is byte-level, so any prompt encodes without
`<unk>`, and a vocabulary that depends on prompt wording would be rebuilt, and every task's shards
with it, whenever one instruction is reworded. What a task contributes is then decided by its
*slots* (`vocab_slots`), which the pipeline records as the task's vocabulary input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ofasys.instruction import Instruction, Slot
from ofasys.modalities import MODALITIES


def vocab_slots(instruction: Instruction) -> dict[str, dict[str, Slot]]:
    """{"text": {column: slot}, "phones": {column: slot}}: the first slot binding each column whose
    values are text-like (a STRUCT's linearisation included) or fill the phone block."""
    found: dict[str, dict[str, Slot]] = {"text": {}, "phones": {}}
    for template in instruction.templates:
        for _, slot in template.slots():
            if not slot.column:
                continue
            modality = MODALITIES[slot.modality]
            if modality.text_values:
                found["text"].setdefault(slot.column, slot)
            if modality.vocab_block == "phones":
                found["phones"].setdefault(slot.column, slot)
    return found


def vocab_slot_spec(instruction: Instruction) -> dict[str, Any]:
    """`vocab_slots` as plain JSON (column -> modality and attributes): exactly what decides a task's
    contribution besides its rows, so a reworded prompt leaves it unchanged."""
    return {kind: {col: {"modality": slot.modality, "attrs": dict(slot.attrs)} for col, slot in sorted(slots.items())}
            for kind, slots in vocab_slots(instruction).items()}


def corpus_texts(columns: Mapping[str, list[Any]], instruction: Instruction) -> Iterator[str]:
    """The strings of a task's text-like columns, as the first slot binding each column stores them
    (`Modality.text_for_vocab`: a STRUCT table's linearisation), columns in name order."""
    text_slots = vocab_slots(instruction)["text"]
    for col in sorted(text_slots):
        if col not in columns:
            continue
        slot = text_slots[col]
        for value in columns[col]:
            value = MODALITIES[slot.modality].text_for_vocab(value, slot.attrs)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))


def corpus_phones(columns: Mapping[str, list[Any]], instruction: Instruction) -> set[str]:
    """The phones of a task's columns bound by slots that fill the vocabulary's phone block."""
    found: set[str] = set()
    for col, slot in vocab_slots(instruction)["phones"].items():
        if col in columns:
            found |= MODALITIES[slot.modality].vocab_tokens(columns[col], slot.attrs)
    return found
