import pytest

from ofasys.text_tokenizer import SPECIAL_TOKENS, train_text_tokenizer

CORPUS = [
    "a photo of two digits on a cat",
    "the quick brown fox jumps over the lazy dog",
    "what does the image describe?",
    "which region does the text describe?",
] * 20


def test_specials_take_ids_0_to_4():
    tok = train_text_tokenizer(CORPUS, vocab_size=400)
    assert [tok.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert tok.get_vocab_size() <= 400


def test_round_trip_and_prefix_space():
    tok = train_text_tokenizer(CORPUS, vocab_size=400)
    for s in ["a photo of two digits", "the lazy fox", "unseen wörds, with punctuation!"]:
        ids = tok.encode(s, add_special_tokens=False).ids
        assert 3 not in ids  # byte level: never <unk>
        assert tok.decode(ids) == " " + s
    # the same word gets the same token at the start of a piece and mid-sentence
    first = tok.encode("photo", add_special_tokens=False).ids
    mid = tok.encode("a photo", add_special_tokens=False).ids
    assert mid[-len(first):] == first


def test_training_is_deterministic():
    a = train_text_tokenizer(CORPUS, vocab_size=400).to_str()
    b = train_text_tokenizer(list(CORPUS), vocab_size=400).to_str()
    assert a == b


def test_too_small_vocab_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        train_text_tokenizer(CORPUS, vocab_size=100)
