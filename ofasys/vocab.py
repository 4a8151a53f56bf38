"""The unified vocabulary: specials, text BPE, `<bin_i>`, `<code_i>`, `<phone_*>` in one id space.

Every output modality is generated as tokens of this one vocabulary, so the model has one embedding
table and one output projection. The layout is an asset: written once, fingerprinted, and every
manifest and checkpoint records the fingerprint. A mismatch is an error, never a silent re-index,
because a re-index would quietly turn every stored id into a different token.

Layout (ids, in order)::

    0..4            <pad> <bos> <eos> <unk> <mask>
    text_range      the BPE tokens (ids 5 .. n_bpe-1; the BPE's own ids)
    bin_range       num_bins location bins
    code_range      num_codes image codes
    phone_range     one id per phone
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from ofasys.data.io import atomic_write_json, canonical_json
from ofasys.text_tokenizer import SPECIAL_TOKENS, check_specials

VOCAB_FORMAT = 1


class VocabMismatchError(ValueError):
    """Recorded vocabulary fingerprint differs from the loaded vocabulary."""


@dataclass(frozen=True)
class UnifiedVocab:
    """Immutable unified vocabulary. Build with `UnifiedVocab.build` or `UnifiedVocab.load`."""

    tokenizer_json: str = field(repr=False)
    """The HF tokenizer serialised with `Tokenizer.to_str()` (the single source of the BPE)."""
    num_bins: int
    num_codes: int = 0
    phones: tuple[str, ...] = ()

    pad: int = field(default=0, init=False)
    bos: int = field(default=1, init=False)
    eos: int = field(default=2, init=False)
    unk: int = field(default=3, init=False)
    mask: int = field(default=4, init=False)

    def __post_init__(self) -> None:
        tok = Tokenizer.from_str(self.tokenizer_json)
        check_specials(tok)
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        if self.num_codes < 0:
            raise ValueError(f"num_codes must be >= 0, got {self.num_codes}")
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("phones must be unique")
        object.__setattr__(self, "phones", tuple(self.phones))
        object.__setattr__(self, "_tok", tok)
        n_bpe = tok.get_vocab_size(with_added_tokens=True)
        object.__setattr__(self, "_n_bpe", n_bpe)
        object.__setattr__(self, "_phone_index", {p: i for i, p in enumerate(self.phones)})

    # ----- construction / persistence -------------------------------------------------------------
    @classmethod
    def build(
        cls, tokenizer: Tokenizer, num_bins: int, num_codes: int = 0, phones: Iterable[str] = ()
    ) -> "UnifiedVocab":
        return cls(tokenizer.to_str(), num_bins=num_bins, num_codes=num_codes, phones=tuple(phones))

    def layout(self) -> dict:
        """The canonical description hashed into the fingerprint (tokenizer included, as parsed JSON)."""
        return {
            "format": VOCAB_FORMAT,
            "specials": list(SPECIAL_TOKENS),
            "num_bins": self.num_bins,
            "num_codes": self.num_codes,
            "phones": list(self.phones),
            "tokenizer": json.loads(self.tokenizer_json),
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical layout JSON: changes with any id's meaning, nothing else."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = hashlib.sha256(canonical_json(self.layout()).encode("utf-8")).hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def save(self, path: str | os.PathLike) -> None:
        """One JSON file (layout + embedded tokenizer), written atomically."""
        obj = self.layout()
        obj["fingerprint"] = self.fingerprint
        atomic_write_json(path, obj, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UnifiedVocab":
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if obj.get("format") != VOCAB_FORMAT:
            raise ValueError(f"{path}: unknown vocab format {obj.get('format')!r}, expected {VOCAB_FORMAT}")
        vocab = cls(
            json.dumps(obj["tokenizer"], ensure_ascii=False),
            num_bins=int(obj["num_bins"]),
            num_codes=int(obj.get("num_codes", 0)),
            phones=tuple(obj.get("phones", ())),
        )
        recorded = obj.get("fingerprint")
        if recorded is not None:
            vocab.check_fingerprint(recorded, where=str(path))
        return vocab

    def check_fingerprint(self, expected: str, where: str) -> None:
        """Raise VocabMismatchError if `expected` (recorded in `where`) is not this vocab's fingerprint."""
        if expected != self.fingerprint:
            raise VocabMismatchError(
                f"vocabulary mismatch: {where} was built with vocab {expected}, but the loaded vocab is "
                f"{self.fingerprint}; rebuild {where} with this vocab (or load the vocab it was built with)"
            )

    # ----- layout ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok  # type: ignore[attr-defined]

    @property
    def specials(self) -> range:
        return range(0, len(SPECIAL_TOKENS))

    @property
    def text_range(self) -> range:
        """BPE token ids (specials excluded): what a TEXT output may generate besides `<eos>`."""
        return range(len(SPECIAL_TOKENS), self._n_bpe)  # type: ignore[attr-defined]

    @property
    def bin_range(self) -> range:
        start = self._n_bpe  # type: ignore[attr-defined]
        return range(start, start + self.num_bins)

    @property
    def code_range(self) -> range:
        start = self.bin_range.stop
        return range(start, start + self.num_codes)

    @property
    def phone_range(self) -> range:
        start = self.code_range.stop
        return range(start, start + len(self.phones))

    @property
    def size(self) -> int:
        return self.phone_range.stop

    def __len__(self) -> int:
        return self.size

    # ----- ids ------------------------------------------------------------------------------------
    def bin_id(self, i: int) -> int:
        if not 0 <= i < self.num_bins:
            raise IndexError(f"bin {i} outside 0..{self.num_bins - 1}")
        return self.bin_range.start + int(i)

    def bin_index(self, token_id: int) -> int:
        if token_id not in self.bin_range:
            raise ValueError(f"id {token_id} is not a bin token (bins are {self.bin_range})")
        return int(token_id) - self.bin_range.start

    def code_id(self, i: int) -> int:
        if not 0 <= i < self.num_codes:
            raise IndexError(f"code {i} outside 0..{self.num_codes - 1}")
        return self.code_range.start + int(i)

    def has_phone(self, phone: str) -> bool:
        return phone in self._phone_index  # type: ignore[attr-defined]

    def phone_id(self, phone: str) -> int:
        try:
            return self.phone_range.start + self._phone_index[phone]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"unknown phone {phone!r}") from None

    def token_name(self, token_id: int) -> str:
        """Human-readable name of any id (for debugging and error messages)."""
        if token_id in self.bin_range:
            return f"<bin_{token_id - self.bin_range.start}>"
        if token_id in self.code_range:
            return f"<code_{token_id - self.code_range.start}>"
        if token_id in self.phone_range:
            return f"<phone_{self.phones[token_id - self.phone_range.start]}>"
        name = self.tokenizer.id_to_token(int(token_id))
        if name is None:
            raise IndexError(f"id {token_id} outside the vocabulary (size {self.size})")
        return name

    # ----- text -----------------------------------------------------------------------------------
    def encode_text(self, s: str) -> list[int]:
        """BPE ids of `s` (no BOS/EOS). A prefix space is implied, as in running text.

        Never returns special ids: text that literally contains "<eos>" or "<mask>" is tokenized as
        ordinary characters (HF tokenizers would match the added special tokens inside the text)."""
        ids = list(self.tokenizer.encode(s, add_special_tokens=False).ids)
        if any(i < len(SPECIAL_TOKENS) for i in ids):
            tok = self.tokenizer
            ids = [t.id for piece, _ in tok.pre_tokenizer.pre_tokenize_str(s) for t in tok.model.tokenize(piece)]
        return ids

    def decode_text(self, ids: Sequence[int]) -> str:
        """Inverse of `encode_text` for text ids; specials and non-text ids are skipped."""
        text = self.text_range
        kept = [int(i) for i in ids if int(i) in text]
        s = self.tokenizer.decode(kept, skip_special_tokens=True)
        return s[1:] if s.startswith(" ") else s
