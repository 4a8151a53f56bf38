"""Did-you-mean suggestions for misspelt names (modalities, attributes, choices, columns).

Why not plain `difflib.get_close_matches`: OFASys's own docs write `BOUNDING_BOX` where
the modality is `BOX`, and difflib rates `AUDIO` closer to it than `BOX`. So a name whose
`_`-separated part *is* a candidate wins first; case-only differences (`text`, `<bos>`)
win before that; difflib handles ordinary typos (`preprocessor` -> `preprocess`).
"""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The single most plausible intended candidate for `word`, or None."""
    candidates = list(candidates)
    if not word or not candidates:
        return None
    by_fold = {c.casefold(): c for c in candidates}
    folded = word.casefold()
    if folded in by_fold:
        return by_fold[folded]
    parts = [p for p in folded.split("_") if p]
    if len(parts) > 1:
        for part in reversed(parts):  # BOUNDING_BOX -> BOX: the head noun is last
            if part in by_fold:
                return by_fold[part]
    close = difflib.get_close_matches(folded, list(by_fold), n=1, cutoff=0.6)
    return by_fold[close[0]] if close else None


def suggestion_text(word: str, candidates: Iterable[str], template: str = "{}") -> str:
    """'did you mean X? ' (formatted through `template`), or '' when nothing is close."""
    match = did_you_mean(word, candidates)
    return f"did you mean {template.format(match)}? " if match else ""
