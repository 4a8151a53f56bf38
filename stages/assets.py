"""Stage `assets`: the text BPE tokenizer and the unified vocabulary, trained on the text of the tasks
in `assets.vocab_tasks` (every task when absent), with the phone block filled from their phones.

It reads what `vocab_text@<task>` wrote to data/vocab_text/<task>/ (train splits only, slot values
only, no prompt wording), so the vocabulary changes only when that text, `assets.*`, or the list of
vocabulary tasks does: adding a task outside the list, rewording a prompt or changing a mixture
weight leaves it byte-identical, and with it every existing task's shards.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from stages import cli

log = logging.getLogger("assets")

CORPUS_DIR = Path("data/vocab_text")
OUT_DIR = Path("assets")


def _corpus_file(task: str, name: str) -> Path:
    path = CORPUS_DIR / task / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the vocabulary text of task {task!r} is missing; "
                                f"run `dvc repro vocab_text@{task}` (or `dvc repro assets`) first")
    return path


def corpus_texts(tasks: tuple[str, ...]) -> Iterator[str]:
    """Every vocabulary task's texts, tasks in name order (the BPE must not depend on params order)."""
    for task in sorted(tasks):
        with open(_corpus_file(task, "texts.jsonl"), encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def corpus_phones(tasks: tuple[str, ...]) -> list[str]:
    found: set[str] = set()
    for task in tasks:
        found |= set(json.loads(_corpus_file(task, "phones.json").read_text(encoding="utf-8")))
    return sorted(found)


def main(args, params) -> None:
    tasks = params.vocab_task_names()
    phones = corpus_phones(tasks)  # first: a missing corpus file stops the stage before training
    tokenizer = train_text_tokenizer(corpus_texts(tasks), vocab_size=params.assets.bpe_vocab_size)
    vocab = UnifiedVocab.build(tokenizer, num_bins=params.assets.num_bins, num_codes=params.assets.num_codes,
                               phones=phones)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    vocab.save(OUT_DIR / "vocab.json")
    log.info("vocab from %s: %d ids (text %d, bins %d, codes %d, phones %d), fingerprint %s",
             ", ".join(sorted(tasks)), vocab.size, len(vocab.text_range), len(vocab.bin_range),
             len(vocab.code_range), len(vocab.phone_range), vocab.fingerprint[:12])


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
