import json

import pytest

from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab, VocabMismatchError

CORPUS = ["a photo of two digits on a cat", "what does the image describe?", "zero one two three"] * 20


@pytest.fixture(scope="module")
def tok():
    return train_text_tokenizer(CORPUS, vocab_size=320)


def test_layout(tok):
    v = UnifiedVocab.build(tok, num_bins=16, num_codes=8, phones=("AA", "B"))
    assert (v.pad, v.bos, v.eos, v.unk, v.mask) == (0, 1, 2, 3, 4)
    n_bpe = tok.get_vocab_size()
    assert v.text_range == range(5, n_bpe)
    assert v.bin_range == range(n_bpe, n_bpe + 16)
    assert v.code_range == range(n_bpe + 16, n_bpe + 24)
    assert v.phone_range == range(n_bpe + 24, n_bpe + 26)
    assert v.size == n_bpe + 26
    assert v.bin_index(v.bin_id(7)) == 7
    assert v.phone_id("B") == n_bpe + 25
    assert v.token_name(v.bin_id(3)) == "<bin_3>"
    with pytest.raises(IndexError):
        v.bin_id(16)
    with pytest.raises(ValueError):
        v.bin_index(5)


def test_text_round_trip(tok):
    v = UnifiedVocab.build(tok, num_bins=16)
    for s in ["a photo of two digits", "zero one two three", "what does the image describe?"]:
        ids = v.encode_text(s)
        assert all(i in v.text_range for i in ids)
        assert v.decode_text(ids) == s
    # special-token strings inside text stay text: they must never become control ids
    ids = v.encode_text("a <mask> two <eos>")
    assert all(i in v.text_range for i in ids) and v.decode_text(ids) == "a <mask> two <eos>"
    # specials and bins are skipped when decoding
    assert v.decode_text([v.bos, *v.encode_text("two three"), v.bin_id(2), v.eos]) == "two three"


def test_save_load_and_fingerprint(tmp_path, tok):
    v = UnifiedVocab.build(tok, num_bins=16)
    path = tmp_path / "vocab.json"
    v.save(path)
    w = UnifiedVocab.load(path)
    assert w.fingerprint == v.fingerprint
    assert w.size == v.size
    assert len(v.fingerprint) == 64
    # stable: rebuilding from an identically trained tokenizer gives the same fingerprint
    again = UnifiedVocab.build(train_text_tokenizer(CORPUS, vocab_size=320), num_bins=16)
    assert again.fingerprint == v.fingerprint
    # sensitive: any change of layout or BPE changes it
    assert UnifiedVocab.build(tok, num_bins=17).fingerprint != v.fingerprint
    assert UnifiedVocab.build(tok, num_bins=16, num_codes=1).fingerprint != v.fingerprint
    other = train_text_tokenizer(CORPUS + ["completely different words here"] * 30, vocab_size=320)
    assert UnifiedVocab.build(other, num_bins=16).fingerprint != v.fingerprint


def test_check_fingerprint_names_both(tok):
    v = UnifiedVocab.build(tok, num_bins=16)
    v.check_fingerprint(v.fingerprint, "x")
    with pytest.raises(VocabMismatchError) as e:
        v.check_fingerprint("f" * 64, "data/shards/caption/manifest.json")
    assert "f" * 64 in str(e.value) and v.fingerprint in str(e.value)
    assert "manifest.json" in str(e.value)


def test_load_detects_edited_file(tmp_path, tok):
    v = UnifiedVocab.build(tok, num_bins=16)
    path = tmp_path / "vocab.json"
    v.save(path)
    obj = json.loads(path.read_text())
    obj["num_bins"] = 32
    path.write_text(json.dumps(obj))
    with pytest.raises(VocabMismatchError):
        UnifiedVocab.load(path)
