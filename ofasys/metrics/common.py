"""Conventions shared by the metrics: aligned inputs, whitespace tokens, and the most common value."""

from __future__ import annotations

import collections
from typing import Hashable, Iterable, Sequence


def check_lengths(a: Sequence, b: Sequence, what: str) -> None:
    """ValueError unless `a` and `b` align and are not empty (a score of nothing is no score)."""
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} predictions but {len(b)} references")
    if len(a) == 0:
        raise ValueError(f"{what}: no examples")


def tokens(text: str | Sequence[str]) -> list[str]:
    """Whitespace tokens of a string; a sequence is taken as already tokenised."""
    return text.split() if isinstance(text, str) else list(text)


def normalise(text: str | None) -> str | None:
    """Whitespace collapsed (`None` stays `None`: an output that did not decode)."""
    return None if text is None else " ".join(str(text).split())


def most_common(values: Iterable[Hashable]) -> Hashable:
    """The most frequent value; ties go to the smallest repr, so the answer does not depend on the
    order of the values (a baseline must not move when the training rows are shuffled)."""
    counts = collections.Counter(values)
    if not counts:
        raise ValueError("baseline: no training labels")
    return min(counts, key=lambda v: (-counts[v], repr(v)))
