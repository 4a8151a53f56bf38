"""Train the text BPE that becomes the first block of the unified vocabulary.

Byte-level BPE (GPT-2 style) so any string is encodable without `<unk>`, with a prefix space added to
every encoded piece: a word gets the same token whether it starts a caption or sits mid-prompt, which
matters because prompts and slot texts are tokenized separately and concatenated as ids. The five
special tokens are trained first so their ids are 0..4 and BPE ids are unified ids directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>")
"""In id order: pad=0, bos=1, eos=2, unk=3, mask=4."""


def new_text_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the project's pre-tokenizer and decoder."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_text_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts`; specials first, then the 256 byte symbols, then merges.

    `vocab_size` counts everything (specials + bytes + merges) and is an upper bound: a small corpus
    yields fewer merges. Training is deterministic for identical input (HF's trainer breaks ties by
    token order), which the vocabulary fingerprint relies on.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least "
            f"{len(SPECIAL_TOKENS) + 256} ids (5 specials + 256 bytes)"
        )
    tok = new_text_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    check_specials(tok)
    return tok


def check_specials(tok: Tokenizer) -> None:
    """Raise ValueError unless ids 0..4 are exactly the project's special tokens."""
    for i, name in enumerate(SPECIAL_TOKENS):
        if tok.id_to_token(i) != name:
            raise ValueError(
                f"tokenizer id {i} is {tok.id_to_token(i)!r}, expected {name!r}: train it with "
                f"train_text_tokenizer so the specials {list(SPECIAL_TOKENS)} take ids 0..4"
            )
