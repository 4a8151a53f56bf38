"""Stage `assets`: the text BPE tokenizer and the unified vocabulary, trained on the tasks' own text,
with the phone block filled from the tasks' PHONE slots.

Only the train splits are read, so nothing about valid/test leaks into the vocabulary. The prompt
text of every instruction is included so prompts never fall back to unknown pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from ofasys.instruction import Instruction, Text, parse_instruction
from ofasys.modalities import MODALITIES
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from stages import cli

log = logging.getLogger("assets")


def _prompt_pieces(instruction: Instruction) -> Iterator[str]:
    def walk(items):
        for item in items:
            if isinstance(item, Text):
                yield item.text
            elif hasattr(item, "items"):
                yield from walk(item.items)

    for template in instruction.templates:
        yield from walk(template.inputs)
        yield from walk(template.outputs)


def task_texts(instruction: Instruction, raw_dir: Path) -> Iterator[str]:
    """Prompt text plus the values of text-like columns of a task's train split, as the first slot
    binding each column stores them (`Modality.text_for_vocab`: a STRUCT table's linearisation)."""
    yield from _prompt_pieces(instruction)
    table = pq.read_table(raw_dir / "train.parquet")
    text_slots = {}
    for t in instruction.templates:
        for _, slot in t.slots():
            if slot.column and MODALITIES[slot.modality].text_values and slot.column in table.column_names:
                text_slots.setdefault(slot.column, slot)
    for col in sorted(text_slots):
        slot = text_slots[col]
        for value in table.column(col).to_pylist():
            value = MODALITIES[slot.modality].text_for_vocab(value, slot.attrs)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))


def task_phones(instruction: Instruction, raw_dir: Path) -> set[str]:
    """The phones of the train values of a task's slots that fill the vocabulary's phone block."""
    table = pq.read_table(raw_dir / "train.parquet")
    found: set[str] = set()
    for template in instruction.templates:
        for _, slot in template.slots():
            modality = MODALITIES[slot.modality]
            if modality.vocab_block == "phones" and slot.column in table.column_names:
                found |= modality.vocab_tokens(table.column(slot.column).to_pylist(), slot.attrs)
    return found


def main(args, params) -> None:
    texts: list[str] = []
    phones: set[str] = set()
    for name, task in params.tasks.items():
        instruction = parse_instruction(task.instruction)
        texts.extend(task_texts(instruction, Path("data/raw") / name))
        phones |= task_phones(instruction, Path("data/raw") / name)
    tokenizer = train_text_tokenizer(texts, vocab_size=params.assets.bpe_vocab_size)
    vocab = UnifiedVocab.build(tokenizer, num_bins=params.assets.num_bins, num_codes=params.assets.num_codes,
                               phones=sorted(phones))
    out = Path("assets")
    out.mkdir(parents=True, exist_ok=True)
    vocab.save(out / "vocab.json")
    log.info("vocab: %d ids (text %d, bins %d, codes %d, phones %d), fingerprint %s",
             vocab.size, len(vocab.text_range), len(vocab.bin_range), len(vocab.code_range),
             len(vocab.phone_range), vocab.fingerprint[:12])


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
