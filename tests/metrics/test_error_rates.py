"""Word, character and phone error rates (jiwer) against hand-computed values."""

from __future__ import annotations

import pytest

from ofasys import metrics as m


def test_wer_one_substitution_in_four_words():
    assert m.wer(["hello duck"], ["hello world"]) == 0.5  # jiwer's README example
    assert m.wer(["a b x d"], ["a b c d"]) == 0.25
    assert m.wer(["a c"], ["a b c"]) == pytest.approx(1 / 3)  # one deletion
    assert m.wer(["a  b "], ["a b"]) == 0.0  # whitespace is collapsed
    assert m.wer([["a", "b"]], [["a", "c"]]) == 0.5  # token lists are accepted


def test_wer_is_corpus_level_and_counts_insertions():
    # (1 substitution + 1 insertion) / (4 + 2) reference words, not the mean (0.25 + 0.5) / 2.
    assert m.wer(["a b x d", "e f g"], ["a b c d", "e f"]) == pytest.approx(2 / 6)
    # 1 substitution + 3 insertions against a 1-word reference: an error rate can exceed 1.
    assert m.wer(["a b c d"], ["x"]) == 4.0


def test_wer_none_hypothesis_deletes_every_reference_word():
    assert m.wer([None, "c d"], ["a b", "c d"]) == 0.5


def test_error_rates_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        m.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        m.cer([], [])
    with pytest.raises(ValueError, match="references hold no tokens"):
        m.wer(["a"], ["  "])


def test_cer_counts_characters_spaces_included():
    assert m.cer(["hello duck"], ["hello world"]) == pytest.approx(5 / 11)  # "world" -> "duck": 4 subs, 1 del
    assert m.cer(["abd", None], ["abc", "xy"]) == pytest.approx(3 / 5)


def test_phone_error_rate_counts_whole_phone_tokens():
    ref = "θ ɹ iː s ɛ v ə n"
    assert m.phone_error_rate([ref], [ref]) == 0.0
    # "i" for "iː" is one substituted phone of 8, whatever the characters.
    assert m.phone_error_rate(["θ ɹ i s ɛ v ə n"], [ref]) == pytest.approx(1 / 8)
    # A missing phone and an extra one over two utterances of 8 + 3 phones.
    assert m.phone_error_rate(["θ ɹ iː s ɛ v n", "w ʌ n n"], [ref, "w ʌ n"]) == pytest.approx(2 / 11)
