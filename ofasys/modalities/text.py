"""TEXT: a string -> int32 BPE ids (no BOS/EOS; collation adds them where the template says).

Normalisation that is the same every epoch happens here: `uncased`, `no_punctuation`, whitespace
runs collapsed to one space, and truncation to `max_length` tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np

from ofasys.modalities.base import NO_ASSETS, Materialised, Modality, OutputStep, RejectRow, RowContext, is_missing
from ofasys.vocab import UnifiedVocab

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


TEXT_ATTRIBUTES = frozenset({
    "no_loss", "closed_set", "mask_ratio", "noise_ratio", "max_length", "min_length", "uncased",
    "no_punctuation", "preprocess", "adaptor", "add_bos", "add_eos", "disable_auto_boseos",
})


class Text(Modality):
    name = "TEXT"
    doc = "str -> int32 BPE ids; shared token embedding; generated as text"
    text_values = True
    output_field = "text"
    attributes = {"TEXT": TEXT_ATTRIBUTES}
    materialise_attrs = ("uncased", "no_punctuation", "max_length")
    preprocess = {
        "default": None,
        "text": None,
        "text_phone": "not supported yet on TEXT slots (OFASys's extra phone targets for speech recognition); "
                      "for the phones of a text use a [PHONE:<column>,preprocess=text_phone] slot",
        "category": "not supported yet on TEXT slots: write the label column as a [CATEGORY:<column>] slot",
    }
    """OFASys's TEXT-slot preprocessors (ofasys/preprocessor/default/text.py, category.py): `text` is
    what materialisation does; `text_phone` and `category` are refused at params load."""
    adaptors = {"default": None, "text": None}
    """OFASys's `text` adaptor is the shared token embedding (and output projection)."""
    what = "text"

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

    def label(self, value: Any, attrs: Mapping[str, Any]) -> str:
        return self.normalise(value, attrs)

    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        """Text ids until the terminator; a `closed_set` slot follows a trie over its labels."""
        if attrs.get("closed_set"):
            if not closed_labels:
                raise ValueError(f"closed_set slot '{column}' has no labels (closed_sets lacks it)")
            trie = Trie()
            for label in closed_labels:
                ids = vocab.encode_text(label)
                if attrs.get("max_length"):
                    ids = ids[: int(attrs["max_length"])]
                trie.add(ids)
            return OutputStep("closed", column, self.name, terminator=terminator, trie=trie)
        return OutputStep("run", column, self.name, allowed=vocab.text_range, terminator=terminator,
                          max_length=int(attrs.get("max_length") or default_max),
                          min_length=int(attrs.get("min_length") or 0))

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        return vocab.decode_text(ids)


class Trie:
    """Label ids as a prefix tree: what a closed-set output may generate next."""

    def __init__(self) -> None:
        self.children: dict[int, Trie] = {}
        self.end = False

    def add(self, ids: Sequence[int]) -> None:
        node = self
        for t in ids:
            node = node.children.setdefault(int(t), Trie())
        node.end = True

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children.values()), default=0) if self.children else 0
