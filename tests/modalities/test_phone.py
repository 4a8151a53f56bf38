"""PHONE: phone strings and text (espeak-ng through phonemizer) -> ids of the vocabulary's phone block."""

from __future__ import annotations

import numpy as np
import pytest

from ofasys.modalities import MODALITIES, RejectRow
from ofasys.modalities.phone import WORD_BOUNDARY, Phone

PHONE = MODALITIES["PHONE"]
THREE_SEVEN = ("θ", "ɹ", "iː", "|", "s", "ɛ", "v", "ə", "n")
"""espeak-ng's en-us IPA of "three seven", words separated by the boundary."""
TEXT_PHONE = {"preprocess": "text_phone"}


def test_vocab_tokens_collect_the_phones_of_the_train_texts(phone_vocab):
    found = Phone().vocab_tokens(["three seven", None, "", "   "], TEXT_PHONE)  # bad values are skipped
    assert found == set(THREE_SEVEN)
    assert set(THREE_SEVEN) <= set(phone_vocab.phones) and WORD_BOUNDARY in phone_vocab.phones
    assert Phone().vocab_tokens(["a b |  c", None], {}) == {"a", "b", "|", "c"}  # phone strings split


def test_text_phone_gives_the_phone_ids_with_word_boundaries(phone_ctx, phone_vocab):
    out = PHONE.materialise("three seven", TEXT_PHONE, phone_ctx)
    assert out.array.dtype == np.int32
    assert out.array.tolist() == [phone_vocab.phone_id(p) for p in THREE_SEVEN]
    assert all(int(i) in phone_vocab.phone_range for i in out.array)
    assert out.array[3] == phone_vocab.phone_id(WORD_BOUNDARY)  # between "three" and "seven"
    assert out.ref == " ".join(THREE_SEVEN)
    # normalised text: spacing does not change the phones
    again = PHONE.materialise("  three   seven ", TEXT_PHONE, phone_ctx)
    assert again.array.tolist() == out.array.tolist()


def test_default_preprocess_splits_a_phone_string(phone_ctx, phone_vocab):
    for attrs in ({}, {"preprocess": "phone"}):
        out = PHONE.materialise("θ ɹ iː  |\ts ɛ v ə n", attrs, phone_ctx)
        assert out.array.tolist() == [phone_vocab.phone_id(p) for p in THREE_SEVEN]
        assert out.ref == " ".join(THREE_SEVEN)
    # the phone string is not phonemized again: "three" as a phone string is one (unknown) phone
    with pytest.raises(RejectRow) as e:
        PHONE.materialise("three", {}, phone_ctx)
    assert "'three'" in e.value.reason


def test_unknown_phones_are_rejected_naming_them(phone_ctx):
    with pytest.raises(RejectRow) as e:
        PHONE.materialise("θ ʒ ɹ ʒ x", {}, phone_ctx)
    assert e.value.reason.startswith("phones ['x', 'ʒ'] are not in the vocabulary's phone block (no train sentence of "
                                     "assets.vocab_tasks has them")
    with pytest.raises(RejectRow) as e:
        PHONE.materialise("zoo", TEXT_PHONE, phone_ctx)  # z and uː: no train text has them
    assert e.value.reason.startswith("phones [") and "'z'" in e.value.reason


@pytest.mark.parametrize(
    "value,attrs,reason",
    [
        ("", TEXT_PHONE, "empty text"),
        ("   ", TEXT_PHONE, "empty text"),
        ("", {}, "empty phones"),
        (None, TEXT_PHONE, "missing phones"),
        ("...", TEXT_PHONE, "text has no phones (nothing espeak-ng can pronounce)"),
    ],
)
def test_empty_values_are_rejected(phone_ctx, value, attrs, reason):
    with pytest.raises(RejectRow) as e:
        PHONE.materialise(value, attrs, phone_ctx)
    assert e.value.reason == reason


def test_max_length_truncates(phone_ctx, phone_vocab):
    out = PHONE.materialise("three seven", {**TEXT_PHONE, "max_length": 4}, phone_ctx)
    assert out.array.tolist() == [phone_vocab.phone_id(p) for p in THREE_SEVEN[:4]]
    full = PHONE.materialise("three seven", {**TEXT_PHONE, "max_length": 50}, phone_ctx)
    assert len(full.array) == len(THREE_SEVEN)


def test_output_step_is_a_run_over_the_phone_block(phone_vocab):
    eos = 2  # the unified vocabulary's <EOS> (ids 0..4 are pad, bos, eos, unk, mask)
    step = PHONE.output_step("ph", {}, phone_vocab, terminator=eos, closed_labels=None, default_max=64)
    assert (step.kind, step.column, step.modality) == ("run", "ph", "PHONE")
    assert step.allowed == phone_vocab.phone_range and len(step.allowed) == len(phone_vocab.phones)
    assert step.terminator == eos and step.max_length == 64 and step.min_length == 0
    step = PHONE.output_step("ph", {"max_length": 12, "min_length": 3}, phone_vocab, terminator=None,
                             closed_labels=None, default_max=64)
    assert (step.max_length, step.min_length, step.terminator) == (12, 3, None)


def test_decode_output_maps_ids_back_to_the_phone_string(phone_ctx, phone_vocab):
    ids = PHONE.materialise("three seven", TEXT_PHONE, phone_ctx).array.tolist()
    text_id = phone_vocab.encode_text("one")[0]
    noisy = [1, *ids[:3], text_id, *ids[3:], phone_vocab.size + 5, 2]  # bos, a text id, out of range, eos
    assert text_id not in phone_vocab.phone_range
    assert PHONE.decode_output(noisy, phone_vocab, {}) == " ".join(THREE_SEVEN)
    assert PHONE.decode_output(np.asarray(ids, np.int64), phone_vocab, {}) == " ".join(THREE_SEVEN)
    assert PHONE.decode_output([], phone_vocab, {}) == ""
