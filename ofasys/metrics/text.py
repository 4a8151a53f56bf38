"""Text metrics: BLEU-4 (sacrebleu), CIDEr-D (pycocoevalcap), ROUGE-L (rouge-score), exact match,
label accuracy and position-wise token accuracy.

The library metrics are computed by the libraries that published numbers come from, on their own
scales, so a figure here reads like one in a paper: sacrebleu's BLEU is 0-100 (its default 13a
tokenisation, exponential smoothing, one reference per output; `BLEU_SIGNATURE` names the
configuration); pycocoevalcap's CIDEr-D is 0-10 (x10 of the cosine, as the COCO server reports it);
ROUGE-L is rouge-score's F-measure averaged over outputs, 0-1. A `None` prediction (an output that
did not decode) is the empty string for them, and a miss for the exact ones.
"""

from __future__ import annotations

import re
from typing import Hashable, Sequence

from ofasys.metrics.common import check_lengths, normalise, tokens


def _texts(values: Sequence[str | None]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=4, tokenize="13a", smooth_method="exp")


def bleu_signature() -> str:
    """sacrebleu's signature of the BLEU configuration used here, one reference per output (logged
    beside the scores; sacrebleu knows the reference count only after scoring something)."""
    bleu = _bleu()
    bleu.corpus_score(["a"], [["a"]])
    return str(bleu.get_signature())


def bleu4(hyps: Sequence[str | None], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU-4 by sacrebleu (0-100): n-gram matches and lengths summed over the corpus, then
    the geometric mean of the 1..4-gram precisions times the brevity penalty. `refs[i]` is one
    reference or a list of them (the same number for every output)."""
    check_lengths(hyps, refs, "bleu4")
    per_output = [[str(r)] if isinstance(r, str) or r is None else [str(x) for x in r] for r in refs]
    counts = {len(r) for r in per_output}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"bleu4: every output needs the same number (>0) of references, got {sorted(counts)}")
    streams = [list(stream) for stream in zip(*per_output)]
    return float(_bleu().corpus_score(_texts(hyps), streams).score)


_COCO_PUNCTUATION = re.compile(r"""[.,!?;:"'`()\[\]{}\-_/\\@#$%^&*+=<>|~]""")


def coco_tokens(text: str) -> str:
    """Lowercased, punctuation dropped, whitespace-tokenised: what the COCO caption toolkit's PTB
    tokenizer (a Java program, not used here) gives for plain captions like the demo's."""
    return " ".join(_COCO_PUNCTUATION.sub(" ", text.lower()).split())


def cider_scores(hyps: Sequence[str | None], refs: Sequence[str]) -> list[float]:
    """Each output's CIDEr-D by pycocoevalcap (0-10), one reference per output; `cider` is their
    mean. The n-gram document frequencies come from all the references given, so scores of
    different test sets do not compare."""
    from pycocoevalcap.cider.cider import Cider

    check_lengths(hyps, refs, "cider")
    gts = {i: [coco_tokens(str(r))] for i, r in enumerate(refs)}
    res = {i: [coco_tokens(h)] for i, h in enumerate(_texts(hyps))}
    _, scores = Cider().compute_score(gts, res)
    return [float(x) for x in scores]


def cider(hyps: Sequence[str | None], refs: Sequence[str]) -> float:
    """Corpus CIDEr-D (the mean of `cider_scores`)."""
    scores = cider_scores(hyps, refs)
    return sum(scores) / len(scores)


def rouge_l(hyps: Sequence[str | None], refs: Sequence[str]) -> float:
    """ROUGE-L F-measure by rouge-score (its tokenizer: lowercased alphanumeric words), averaged over
    outputs (0-1)."""
    from rouge_score import rouge_scorer

    check_lengths(hyps, refs, "rouge_l")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return sum(scorer.score(str(r), h)["rougeL"].fmeasure for h, r in zip(_texts(hyps), refs)) / len(refs)


def exact_match(preds: Sequence[str | None], golds: Sequence[str | Sequence[str]]) -> float:
    """Share of predictions equal to (one of) their reference(s) after collapsing whitespace."""
    check_lengths(preds, golds, "exact_match")
    hits = 0
    for pred, gold in zip(preds, golds):
        options = [gold] if isinstance(gold, str) else list(gold)
        hits += normalise(pred) is not None and normalise(pred) in {normalise(g) for g in options}
    return hits / len(preds)


def accuracy(preds: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Share of predictions equal (`==`) to their gold label."""
    check_lengths(preds, golds, "accuracy")
    return sum(p is not None and p == g for p, g in zip(preds, golds)) / len(preds)


def token_accuracy(pred_tokens: Sequence[str | Sequence[Hashable] | None],
                   gold_tokens: Sequence[str | Sequence[Hashable]]) -> float:
    """Position-wise token accuracy over the corpus: correct positions / total gold tokens.

    Strings are split on whitespace. Position i of a gold sequence counts as correct when the
    prediction has the same token at position i; missing predicted positions are wrong and extra
    ones are ignored (length errors already cost the positions they shift).
    """
    check_lengths(pred_tokens, gold_tokens, "token_accuracy")
    correct = total = 0
    for pred, gold in zip(pred_tokens, gold_tokens):
        p = [] if pred is None else tokens(pred)
        g = tokens(gold)
        correct += sum(a == b for a, b in zip(p, g))
        total += len(g)
    if total == 0:
        raise ValueError("token_accuracy: the gold sequences hold no tokens")
    return correct / total
