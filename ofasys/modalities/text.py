"""TEXT: a string -> int32 BPE ids (no BOS/EOS; collation adds them where the template says).

Normalisation that is the same every epoch happens here: `uncased`, `no_punctuation`, whitespace
runs collapsed to one space, and truncation to `max_length` tokens.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping

import numpy as np

from ofasys.modalities.base import Materialised, RejectRow, RowContext, is_missing

_SPACE = re.compile(r"\s+")
_SPLITTERS = {"-", "/"}
"""Punctuation that separates words ("left-most", "and/or"): replaced by a space, not removed."""


def normalise_text(s: str, uncased: bool = False, no_punctuation: bool = False) -> str:
    """The text as stored: optional lowercasing and punctuation removal, single spaces, stripped."""
    if uncased:
        s = s.lower()
    if no_punctuation:
        s = "".join(
            " " if ch in _SPLITTERS else ("" if unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~" else ch)
            for ch in s
        )
    return _SPACE.sub(" ", s).strip()


def value_to_str(value: Any, what: str) -> str:
    """Strings as they are; ints and finite floats (labels such as counts) as their decimal text."""
    if is_missing(value):
        raise RejectRow(f"missing {what}")
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RejectRow(f"{what} is not valid utf-8") from None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return repr(float(value))
    raise RejectRow(f"{what} is not a string (got {type(value).__name__})")


class TextEncoder:
    modality = "TEXT"
    dtype = "int32"
    materialise_attrs = ("uncased", "no_punctuation", "max_length")
    """Slot attributes that change the stored array; slots sharing a column must agree on them."""
    what = "text"

    def shape(self, image_size: int) -> list[int | None]:
        return [None]

    def normalise(self, value: Any, attrs: Mapping[str, Any]) -> str:
        s = normalise_text(
            value_to_str(value, self.what),
            uncased=bool(attrs.get("uncased", False)),
            no_punctuation=bool(attrs.get("no_punctuation", False)),
        )
        if not s:
            raise RejectRow(f"empty {self.what}")
        return s

    def encode(self, s: str, attrs: Mapping[str, Any], ctx: RowContext) -> np.ndarray:
        ids = ctx.vocab.encode_text(s)
        max_length = attrs.get("max_length")
        if max_length:
            ids = ids[: int(max_length)]
        return np.asarray(ids, dtype=np.int32)

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        s = self.normalise(value, attrs)
        ref = value if isinstance(value, str) else s
        return Materialised(self.encode(s, attrs, ctx), ref=ref)

    def token_length(self, array: np.ndarray) -> int:
        return int(array.shape[0])
