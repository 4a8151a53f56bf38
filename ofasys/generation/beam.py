"""Constrained greedy / beam search over any step-wise decoder, with per-sample forced prefixes.

The search knows nothing about the model: it drives a `StepDecoder` (feed one token per row, get
next-token logits; reorder rows when beams are re-ranked), so the same code runs on the KV-cached
universal decoder, on an uncached reference decoder in tests, or on a hand-made toy distribution.

Rows: sample i owns rows i*k .. i*k+k-1 (k = beam size). All rows advance in lockstep, one position
per step. While a sample is still inside its forced prefix (`<bos>` + output-side prompt text) its
rows are fed the prefix tokens; afterwards its rows are fed the search's choices. Samples with
different prefix lengths therefore simply start searching at different steps, and no decoder-side
padding is ever needed.

Scores are sums of the model's log-probabilities (log-softmax over the full vocabulary, then the
constraint masks disallowed ids to -inf; masking does not renormalise, so a score is the model's
true log-likelihood of the sequence). Finished hypotheses are ranked by score / length**length_penalty
with the length counting the final <eos>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


class OutputConstraint(Protocol):
    """What the search needs from an `OutputPlan` (ofasys/data/plan.py): `generated` never holds the
    forced prefix."""

    max_new_tokens: int

    def allowed(self, generated: Sequence[int]) -> Sequence[int] | None:
        """Ids allowed next; None = any id."""

    def done(self, generated: Sequence[int]) -> bool:
        """True once `generated` is a complete output (it then stops growing)."""


class StepDecoder(Protocol):
    """A decoder advanced one position per call for N rows (N = samples x beam size)."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: N ids at the current position -> N x V next-token logits."""

    def reorder(self, index: torch.Tensor) -> None:
        """Row r continues from row index[r] (beams re-ranked); index stays within a sample."""


@dataclass(frozen=True)
class Hypothesis:
    """A finished output: ids after the forced prefix (final <eos> excluded) and its scores."""

    tokens: list[int]
    score: float
    """logprob / length**length_penalty, length counting a final <eos>."""
    logprob: float
    """Sum of the model's log-probabilities of the generated ids (final <eos> included)."""


@torch.no_grad()
def beam_search(
    decoder: StepDecoder,
    prefixes: Sequence[Sequence[int]],
    constraints: Sequence[OutputConstraint],
    *,
    beam_size: int,
    eos_id: int,
    max_new_tokens: Sequence[int],
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """Best hypothesis per sample. `decoder` must hold len(prefixes) * beam_size rows.

    beam_size=1 is greedy decoding (the arg-max allowed id at each step). A hypothesis finishes when
    it emits `eos_id`, when its constraint says `done`, or when it reaches `max_new_tokens[i]`; a
    sample stops once `beam_size` hypotheses finished (fairseq's rule) or none can continue.
    """
    k = beam_size
    n_samples = len(prefixes)
    if not (len(constraints) == len(max_new_tokens) == n_samples):
        raise ValueError("prefixes, constraints and max_new_tokens need one entry per sample")
    if k < 1:
        raise ValueError(f"beam_size must be >= 1, got {k}")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every sample needs a non-empty forced prefix (at least <bos>)")
    n = n_samples * k

    # Per row: generated ids so far and the running log-prob. Only the first row of each sample is
    # alive at the start, so the first free step expands one hypothesis into k distinct ones.
    generated: list[list[int]] = [[] for _ in range(n)]
    scores = torch.full((n,), float("-inf"))
    scores[::k] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(n_samples)]
    active = [True] * n_samples
    tokens = [prefixes[i][0] for i in range(n_samples) for _ in range(k)]
    t = 0  # position of the tokens being fed

    def finish(i: int, gen: list[int], logprob: float) -> None:
        out = gen[:-1] if gen and gen[-1] == eos_id else gen
        norm = logprob / max(len(gen), 1) ** length_penalty
        finished[i].append(Hypothesis(tokens=list(out), score=norm, logprob=logprob))

    while any(active):
        logits = decoder.step(torch.tensor(tokens, dtype=torch.long))
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        vocab = logprobs.shape[-1]
        index = list(range(n))
        for i in range(n_samples):
            if not active[i]:
                continue
            rows = range(i * k, i * k + k)
            if t + 1 < len(prefixes[i]):  # still forcing this sample's prefix
                for r in rows:
                    tokens[r] = prefixes[i][t + 1]
                continue
            if max_new_tokens[i] <= 0:
                finish(i, [], 0.0)
                active[i] = False
                continue
            # Candidate scores for every (row, id): running score + log p, disallowed ids at -inf.
            cand = logprobs[i * k:(i + 1) * k] + scores[i * k:(i + 1) * k, None]
            for j, r in enumerate(rows):
                if scores[r] == float("-inf"):
                    continue
                allowed = constraints[i].allowed(generated[r])
                if allowed is not None:
                    keep = torch.full((vocab,), float("-inf"))
                    keep[torch.as_tensor(list(allowed), dtype=torch.long)] = 0.0
                    cand[j] += keep
            # 2k candidates: enough to refill k beams even if k of them finish at this step.
            top_scores, top_ids = cand.flatten().topk(min(2 * k, cand.numel()))
            survivors: list[tuple[float, int, int, list[int]]] = []
            for rank, (score, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
                if score == float("-inf") or len(survivors) == k:
                    break
                j, tok = divmod(flat, vocab)
                gen = generated[i * k + j] + [tok]
                if tok == eos_id or constraints[i].done(gen) or len(gen) >= max_new_tokens[i]:
                    if rank < k:  # like fairseq: only a top-k candidate may end the search's beams
                        finish(i, gen, score)
                else:
                    survivors.append((score, i * k + j, tok, gen))
            if len(finished[i]) >= k or not survivors:
                active[i] = False
            new_generated = [gen for _, _, _, gen in survivors]
            for j, r in enumerate(rows):
                if j < len(survivors):
                    score, src, tok, _ = survivors[j]
                    scores[r], index[r], tokens[r], generated[r] = score, src, tok, new_generated[j]
                else:  # fewer live candidates than beams: park the row as dead
                    scores[r], index[r], tokens[r], generated[r] = float("-inf"), i * k, eos_id, []
        if not any(active):
            break
        decoder.reorder(torch.tensor(index, dtype=torch.long))
        t += 1

    results = []
    for i in range(n_samples):
        if not finished[i]:  # no allowed id at all: an empty output is the only honest answer
            results.append(Hypothesis(tokens=[], score=float("-inf"), logprob=float("-inf")))
        else:
            results.append(max(finished[i], key=lambda h: h.score))
    return results
