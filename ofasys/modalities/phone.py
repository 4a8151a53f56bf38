"""PHONE: a phone string ("th r iy | s eh v ax n"), or text with `preprocess=text_phone`, -> phone ids.

Phones are tokens of the unified vocabulary's phone block (`<phone_*>`), one id per phone; `|`
marks a word boundary, as in OFASys. `preprocess=text_phone` turns text into phones offline at
materialisation with espeak-ng through `phonemizer` (IPA phones, en-us), once per distinct text.
The phone inventory is collected from the tasks' train data by the assets stage
(`Phone.vocab_tokens`), so every phone a sample holds has an id; a phone outside the inventory (a
valid or test sentence with a sound no train sentence has) is a rejected row naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ofasys.modalities.base import NO_ASSETS, Materialised, Modality, OutputStep, RejectRow, RowContext
from ofasys.modalities.text import normalise_text, value_to_str
from ofasys.vocab import UnifiedVocab

WORD_BOUNDARY = "|"
LANGUAGE = "en-us"
"""espeak-ng voice used by `preprocess=text_phone`."""


@functools.cache
def _backend():
    from phonemizer.backend import EspeakBackend

    return EspeakBackend(LANGUAGE, preserve_punctuation=False, with_stress=False)


@functools.lru_cache(maxsize=65536)
def text_to_phones(text: str) -> tuple[str, ...]:
    """The IPA phones of `text` (espeak-ng, en-us), words separated by `|`."""
    from phonemizer.separator import Separator

    [out] = _backend().phonemize([text], separator=Separator(phone=" ", word=f" {WORD_BOUNDARY} ", syllable=""),
                                 strip=True, njobs=1)
    return tuple(p for p in out.split() if p)


class Phone(Modality):
    name = "PHONE"
    doc = "phone string, or text with preprocess=text_phone (espeak-ng) -> phone ids; generated as phones"
    output_field = "phones"
    vocab_block = "phones"
    attributes = {"PHONE": frozenset({
        "no_loss", "mask_ratio", "noise_ratio", "max_length", "min_length", "preprocess", "adaptor", "add_bos",
        "add_eos", "disable_auto_boseos",
    })}
    materialise_attrs = ("preprocess", "max_length")
    preprocess = {"default": None, "phone": None, "text_phone": None}
    adaptors = {"default": None, "text": None}

    def phones(self, value: Any, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        """The phones of a raw value: split on whitespace, or phonemized text (`text_phone`)."""
        text = normalise_text(value_to_str(value, "phones"))
        if not text:
            raise RejectRow("empty phones" if attrs.get("preprocess") != "text_phone" else "empty text")
        if attrs.get("preprocess") == "text_phone":
            phones = text_to_phones(text)
            if not phones:
                raise RejectRow("text has no phones (nothing espeak-ng can pronounce)")
            return phones
        return tuple(text.split())

    def vocab_tokens(self, values: Iterable[Any], attrs: Mapping[str, Any]) -> set[str]:
        """The phones of the (train) values, for the vocabulary's phone block; bad values skipped
        (materialisation rejects them with the reason)."""
        found: set[str] = set()
        for value in values:
            try:
                found.update(self.phones(value, attrs))
            except RejectRow:
                continue
        return found

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        phones = self.phones(value, attrs)
        unknown = sorted({p for p in phones if not ctx.vocab.has_phone(p)})
        if unknown:
            raise RejectRow(f"phones {unknown} are not in the vocabulary's phone block (no train sentence of "
                            f"assets.vocab_tasks has them; list this task there to rebuild the vocabulary with them)")
        ids = [ctx.vocab.phone_id(p) for p in phones]
        if attrs.get("max_length"):
            ids = ids[: int(attrs["max_length"])]
        return Materialised(np.asarray(ids, dtype=np.int32), ref=" ".join(phones))

    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        return OutputStep("run", column, self.name, allowed=vocab.phone_range, terminator=terminator,
                          max_length=int(attrs.get("max_length") or default_max),
                          min_length=int(attrs.get("min_length") or 0))

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        return " ".join(vocab.phones[int(t) - vocab.phone_range.start] for t in ids if int(t) in vocab.phone_range)
