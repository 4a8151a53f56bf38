"""Short windows of real English text with a small vocabulary, for text infilling.

The text is Python's own documentation (`pydoc_data.topics`, shipped with every CPython), lowercased
and cut into words (`[a-z]+`). The vocabulary is the `VOCAB_SIZE` most frequent words of the whole
corpus; a window is 6-10 consecutive words that all belong to it, so the sentences are real text
(not a bag of frequent words with the rest deleted). Documentation *topics* are partitioned between
train/valid/test by a hash of the topic name, so test windows come from text never trained on.

The topics text can differ between CPython patch releases; `corpus_fingerprint()` names the text
used, and the generators record it in the table metadata.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import re

import numpy as np

VOCAB_SIZE = 300
WINDOW = (6, 10)
"""Inclusive range of words per window."""
SPLITS = ("train", "valid", "test")
_WORD = re.compile(r"[a-z]+")


def _topic_split(name: str) -> str:
    """70/15/15 by a stable hash of the topic name (not Python's salted `hash`)."""
    u = int.from_bytes(hashlib.sha256(f"demo-topic:{name}".encode()).digest()[:8], "big") / 2**64
    return "train" if u < 0.7 else "valid" if u < 0.85 else "test"


@functools.cache
def _corpus() -> tuple[dict[str, tuple[tuple[str, ...], ...]], tuple[str, ...], str]:
    from pydoc_data.topics import topics

    names = sorted(topics)
    words = {name: _WORD.findall(topics[name].lower()) for name in names}
    counts = collections.Counter(w for name in names for w in words[name])
    # Ties broken alphabetically so the vocabulary does not depend on dict order.
    vocab = tuple(sorted(sorted(counts, key=lambda w: (-counts[w], w))[:VOCAB_SIZE]))
    keep = set(vocab)
    runs: dict[str, list[tuple[str, ...]]] = {s: [] for s in SPLITS}
    for name in names:
        run: list[str] = []
        for w in words[name] + [""]:
            if w in keep:
                run.append(w)
                continue
            if len(run) >= WINDOW[0]:
                runs[_topic_split(name)].append(tuple(run))
            run = []
    digest = hashlib.sha256("\0".join(f"{n}\0{topics[n]}" for n in names).encode()).hexdigest()
    return {s: tuple(r) for s, r in runs.items()}, vocab, digest


def vocabulary() -> tuple[str, ...]:
    """The sorted word list windows are drawn from."""
    return _corpus()[1]


def corpus_fingerprint() -> str:
    """sha256 of the documentation text the windows come from."""
    return _corpus()[2]


def runs(split: str) -> tuple[tuple[str, ...], ...]:
    """Maximal runs (>= 6 words) of in-vocabulary words from the topics assigned to `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return _corpus()[0][split]


@functools.cache
def _run_weights(split: str, n: int) -> np.ndarray:
    """Runs weighted by their number of n-word start positions: every window equally likely."""
    weights = np.array([max(len(r) - n + 1, 0) for r in runs(split)], dtype=np.float64)
    weights = weights / weights.sum()
    weights.flags.writeable = False
    return weights


def window(rng: np.random.Generator, split: str) -> str:
    """One random window of 6-10 consecutive in-vocabulary words, joined by single spaces."""
    pool = runs(split)
    n = int(rng.integers(WINDOW[0], WINDOW[1] + 1))
    run = pool[int(rng.choice(len(pool), p=_run_weights(split, n)))]
    start = int(rng.integers(len(run) - n + 1))
    return " ".join(run[start : start + n])
