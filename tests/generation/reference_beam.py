"""The beam search as first written, kept as the reference the vectorised one must equal: per step
it copies the N x V log-probabilities to the host, asks each live row's constraint for its allowed
ids (replaying the row's whole output) and builds a full-vocabulary mask per row. Slow and obvious."""

from __future__ import annotations

from typing import Sequence

import torch

from ofasys.generation.beam import Hypothesis, OutputConstraint, StepDecoder


@torch.no_grad()
def reference_beam_search(
    decoder: StepDecoder,
    prefixes: Sequence[Sequence[int]],
    constraints: Sequence[OutputConstraint],
    *,
    beam_size: int,
    eos_id: int,
    max_new_tokens: Sequence[int],
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """The search as it was first written: `allowed`/`done` replayed per row, masks built per row."""
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
