"""Text metrics against the values their libraries document, and hand-computed ones."""

from __future__ import annotations

import math

import pytest

from ofasys import metrics as m

# sacrebleu's README example: two reference streams, "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943)".
README_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
               ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]


def test_bleu4_is_sacrebleu_on_its_readme_example():
    refs = [list(r) for r in zip(*README_REFS)]  # per output: its two references
    assert m.bleu4(README_SYS, refs) == pytest.approx(48.53, abs=0.005)
    assert "tok:13a" in m.bleu_signature() and "smooth:exp" in m.bleu_signature()


def test_bleu4_hand_value_is_on_the_0_to_100_scale():
    # p1..p4 = 5/6, 4/5, 3/4, 2/3 (product 1/3), equal lengths so BP = 1.
    assert m.bleu4(["a b c d e f"], ["a b c d e g"]) == pytest.approx(100 * (1 / 3) ** 0.25)
    assert m.bleu4(["the cat sat on the mat"] * 2, ["the cat sat on the mat"] * 2) == pytest.approx(100.0)
    # brevity penalty exp(1 - r/c) for a hypothesis half the reference's length
    assert m.bleu4(["a b c d"], ["a b c d e f g h"]) == pytest.approx(100 * math.exp(1 - 8 / 4))


def test_bleu4_counts_an_undecoded_output_as_empty_and_rejects_bad_inputs():
    assert m.bleu4([None, "a b c d"], ["x y z w", "a b c d"]) < m.bleu4(["x y z w", "a b c d"], ["x y z w", "a b c d"])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        m.bleu4(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        m.bleu4([], [])
    with pytest.raises(ValueError, match="same number"):
        m.bleu4(["a", "b"], [["a"], ["b", "c"]])


def test_rouge_l_is_rouge_score_on_its_readme_example():
    # rouge-score's README: rougeL(target, prediction) F = 0.5882352941176471
    target, prediction = "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."
    assert m.rouge_l([prediction], [target]) == pytest.approx(0.5882352941176471)
    # averaged over outputs: 1 and 0
    assert m.rouge_l(["a b", None], ["a b", "c d"]) == pytest.approx(0.5)


def test_cider_d_hand_values():
    # Distinct captions each matching its reference: every n-gram has document frequency 1 of N = 2,
    # idf log 2 > 0, cosine 1, no length penalty: CIDEr-D = 10 x mean over n = 1..4 of 1.
    caps = ["a dog runs on grass", "two cats sleep on a sofa"]
    assert m.cider(caps, caps) == pytest.approx(10.0)
    # A 3-word caption has no 4-grams: the n = 4 term is 0, so 10 x 3/4.
    assert m.cider(["a b c", "d e f"], ["a b c", "d e f"]) == pytest.approx(7.5)
    # Case and punctuation are dropped before scoring, as the COCO tokenizer drops them.
    assert m.cider(["A dog runs, on grass.", caps[1]], caps) == pytest.approx(10.0)
    assert m.cider([None, caps[1]], caps) == pytest.approx(5.0)


def test_exact_match_and_accuracy():
    assert m.exact_match(["three  five", "one", None], ["three five", "two", "one"]) == pytest.approx(1 / 3)
    assert m.exact_match(["a b"], [["x", "a b"]]) == 1.0
    assert m.accuracy(["one", "two", "two", None], ["one", "two", "three", "one"]) == 0.5


def test_token_accuracy_is_positional_and_corpus_level():
    assert m.token_accuracy(["a b x"], ["a b c d"]) == 0.5
    assert m.token_accuracy(["a b c d e f"], ["a b"]) == 1.0  # extra tokens are ignored
    # (2 + 0) correct of (4 + 1) gold tokens; not the mean (0.5 + 0) / 2.
    assert m.token_accuracy(["a b x", "y"], ["a b c d", "z"]) == pytest.approx(2 / 5)
    assert m.token_accuracy([[1, 2, 3]], [[1, 9, 3]]) == pytest.approx(2 / 3)
    assert m.token_accuracy([None], ["a b"]) == 0.0
