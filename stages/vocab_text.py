"""Stage `vocab_text@<task>`: what one task gives the vocabulary -> data/vocab_text/<task>/.

For a task in `assets.vocab_tasks` (every task when that is absent): `texts.jsonl` (one JSON string
per line, the train split's text-like slot values) and `phones.json` (the phones of its phone slots).
Any other task gets an empty directory, so adding it leaves `data/vocab_text` and with it the
vocabulary, and every other task's shards, untouched. Only the train split is read: nothing about
valid/test leaks into the vocabulary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from ofasys.data.io import atomic_write_bytes, atomic_write_json
from ofasys.instruction import parse_instruction
from ofasys.vocab_corpus import corpus_phones, corpus_texts, vocab_slots
from stages import cli

log = logging.getLogger("vocab_text")

RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/vocab_text")


def write_task_corpus(instruction_text: str, raw_dir: Path, out_dir: Path) -> tuple[int, int]:
    """Write `texts.jsonl` and `phones.json` of one task into `out_dir`; (texts, phones) counted."""
    instruction = parse_instruction(instruction_text)
    wanted = sorted({col for slots in vocab_slots(instruction).values() for col in slots})
    train = raw_dir / "train.parquet"
    present = set(pq.read_schema(train).names)
    table = pq.read_table(train, columns=[c for c in wanted if c in present])
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    texts = [json.dumps(t, ensure_ascii=False) + "\n" for t in corpus_texts(columns, instruction) if t]
    phones = sorted(corpus_phones(columns, instruction))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "texts.jsonl", "".join(texts).encode("utf-8"))
    atomic_write_json(out_dir / "phones.json", phones)
    return len(texts), len(phones)


def main(args, params) -> None:
    if args.task not in params.tasks:
        raise cli.ParamsError(f"--task {args.task!r} is not in params tasks: {', '.join(params.tasks)}")
    out = OUT_DIR / args.task
    out.mkdir(parents=True, exist_ok=True)
    if args.task not in params.vocab_task_names():
        for stale in ("texts.jsonl", "phones.json"):  # left by a run from when the task was in the list
            (out / stale).unlink(missing_ok=True)
        log.info("%s: not in assets.vocab_tasks; it adds nothing to the vocabulary", args.task)
        return
    n_texts, n_phones = write_task_corpus(params.tasks[args.task].instruction, RAW_DIR / args.task, out)
    log.info("%s: %d texts, %d phones for the vocabulary", args.task, n_texts, n_phones)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.run(main, p.parse_args())
