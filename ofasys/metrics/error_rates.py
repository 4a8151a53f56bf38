"""Error rates of transcripts, from jiwer: word (WER), character (CER) and phone (PER).

Corpus rates: minimum edits (substitutions + deletions + insertions) summed over all pairs, divided by
the total reference length (not a mean of per-sentence rates). Lower is better; 0 is perfect and
insertions can push a rate above 1. A `None` hypothesis (an output that did not decode) is empty:
every reference token deleted.
"""

from __future__ import annotations

from typing import Sequence

import jiwer

from ofasys.metrics.common import check_lengths, tokens


def _joined(values: Sequence[str | Sequence[str] | None]) -> list[str]:
    return ["" if x is None else " ".join(tokens(x)) for x in values]


def _check(hyps, refs, what: str) -> list[str]:
    check_lengths(hyps, refs, what)
    r = _joined(refs)
    if not any(r):
        raise ValueError(f"{what}: the references hold no tokens")
    return r


def wer(hyps: Sequence[str | Sequence[str] | None], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus word error rate over whitespace tokens (`jiwer.wer` on lists of sentences)."""
    r = _check(hyps, refs, "wer")
    return float(jiwer.wer(r, _joined(hyps)))


def cer(hyps: Sequence[str | None], refs: Sequence[str]) -> float:
    """Corpus character error rate (`jiwer.cer`; whitespace collapsed to single spaces, which count)."""
    r = _check(hyps, refs, "cer")
    return float(jiwer.cer(r, _joined(hyps)))


def phone_error_rate(hyps: Sequence[str | Sequence[str] | None], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus phone error rate: WER over phone tokens, which are separated by whitespace
    ("θ ɹ iː s ɛ v ə n"); any word-boundary marker the phone strings carry counts as a token."""
    r = _check(hyps, refs, "phone_error_rate")
    return float(jiwer.wer(r, _joined(hyps)))
