"""Constrained greedy / beam search over any step-wise decoder, with per-sample forced prefixes,
batched over many samples and vectorised.

The search knows nothing about the model: it drives a `StepDecoder` (feed one token per row, get
next-token logits; reorder rows when beams are re-ranked), so the same code runs on the KV-cached
universal decoder, on an uncached reference decoder in tests, or on a hand-made toy distribution.

Rows: sample i owns rows i*k .. i*k+k-1 (k = beam size). All rows advance in lockstep, one position
per step. While a sample is still inside its forced prefix (`<bos>` + output-side prompt text) its
rows are fed the prefix tokens; afterwards its rows are fed the search's choices. Samples with
different prefix lengths therefore simply start searching at different steps, and no decoder-side
padding is ever needed. Once enough samples have finished (`prune_at`), a decoder that can `select`
rows drops theirs, so that the remaining steps cost what the live samples need; the search keeps its
own per-sample row numbering and maps it to the decoder's rows.

Scores are sums of the model's log-probabilities (log-softmax over the full vocabulary, then the
constraint masks disallowed ids to -inf; masking does not renormalise, so a score is the model's
true log-likelihood of the sequence). Finished hypotheses are ranked by score / length**length_penalty
with the length counting the final <eos>.

Per step, everything proportional to the vocabulary stays on the decoder's device: log-softmax of
the searching rows, their allowed-id masks gathered by index from a table built once before the
search (`ofasys.generation.masks`), the running scores added, and one top-2k over each sample's
k x V candidates. The only device-to-host copy of a step is those candidates' (score, flat index)
pairs, 2k per searching sample; the host decides which of them finish or survive (fairseq's rule:
only a top-k candidate may finish; survivors refill the k beams), advancing each survivor's plan
cursor by one id. What goes back to the device is per row: the fed token, its mask row, its score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from ofasys.generation.masks import ANY, MaskTable


class OutputConstraint(Protocol):
    """What the search needs from a constraint: `generated` never holds the forced prefix.

    An `OutputPlan` (ofasys/data/plan.py) also walks incrementally (`IncrementalConstraint`), which
    the search uses instead: then `allowed`/`done` are never called. Any other object is asked
    `allowed(generated)` for every live hypothesis at every step, as a reference or a test fake."""

    max_new_tokens: int

    def allowed(self, generated: Sequence[int]) -> Sequence[int] | None:
        """Ids allowed next; None = any id."""

    def done(self, generated: Sequence[int]) -> bool:
        """True once `generated` is a complete output (it then stops growing)."""


class IncrementalConstraint(OutputConstraint, Protocol):
    """A constraint walked one id at a time: `start()` -> a state with `.done`; `advance(state, id)`;
    `mask_id(state)` -> the index in `mask_parts()` (every set it may allow, each a sequence of
    ranges / id tuples) of the ids allowed next."""

    def start(self) -> Any: ...

    def advance(self, state: Any, token: int) -> Any: ...

    def mask_id(self, state: Any) -> int: ...

    def mask_parts(self) -> Sequence[Sequence[range | tuple[int, ...]]]: ...


class StepDecoder(Protocol):
    """A decoder advanced one position per call for N rows (N = samples x beam size)."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: N ids at the current position -> N x V next-token logits."""

    def reorder(self, index: torch.Tensor) -> None:
        """Row r continues from row index[r] (beams re-ranked); index stays within a sample."""


class PrunableDecoder(StepDecoder, Protocol):
    """A `StepDecoder` that can also drop rows: what lets the search stop computing finished samples."""

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows, in this order (row r continues from row rows[r]); every per-row state
        (caches, encoder output, masks) follows. Like `reorder`, but the result may hold fewer rows."""


PRUNE_AT = 0.25
"""Default `prune_at`: drop finished samples' rows once they are at least a quarter of the decoder's
rows, so that a step's cost follows the live samples without a copy of every cache at every step."""


@dataclass(frozen=True)
class Hypothesis:
    """A finished output: ids after the forced prefix (final <eos> excluded) and its scores."""

    tokens: list[int]
    score: float
    """logprob / length**length_penalty, length counting a final <eos>."""
    logprob: float
    """Sum of the model's log-probabilities of the generated ids (final <eos> included)."""


class _Cursors:
    """A sample's constraint through its cursor: states advance by one id, masks are table rows
    registered before the search."""

    def __init__(self, plan: IncrementalConstraint, table: MaskTable):
        self.plan = plan
        self.rows = [table.add(parts) for parts in plan.mask_parts()]

    def start(self) -> Any:
        return self.plan.start()

    def advance(self, state: Any, gen: tuple[int, ...]) -> tuple[Any, bool]:
        state = self.plan.advance(state, gen[-1])
        return state, state.done

    def mask(self, state: Any, gen: tuple[int, ...]) -> int:
        return self.rows[self.plan.mask_id(state)]


class _Replays:
    """A constraint that only answers `allowed(generated)` / `done(generated)`: asked about each
    hypothesis's whole output, as the search always did."""

    def __init__(self, constraint: OutputConstraint, table: MaskTable):
        self.constraint, self.table = constraint, table

    def start(self) -> Any:
        return None

    def advance(self, state: Any, gen: tuple[int, ...]) -> tuple[Any, bool]:
        return None, self.constraint.done(list(gen))

    def mask(self, state: Any, gen: tuple[int, ...]) -> int:
        return self.table.row_of_ids(self.constraint.allowed(list(gen)))


def _incremental(constraint: Any) -> bool:
    return all(callable(getattr(constraint, name, None)) for name in ("start", "advance", "mask_id", "mask_parts"))


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
    prune_at: float | None = PRUNE_AT,
) -> list[Hypothesis]:
    """Best hypothesis per sample. `decoder` must hold len(prefixes) * beam_size rows.

    A decoder with `select` (`PrunableDecoder`) loses the rows of finished samples once they are at
    least `prune_at` of its rows (None: never), so that the remaining steps run on live samples only;
    the outputs are the same either way, as a row's logits do not depend on the other rows (up to the
    float rounding of a smaller matrix product, as with batched vs one-at-a-time inference).

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
    if prune_at is not None and not 0.0 <= prune_at <= 1.0:
        raise ValueError(f"prune_at must be within [0, 1] or None, got {prune_at}")
    n = n_samples * k
    neg_inf = float("-inf")
    table = MaskTable()
    drivers = [_Cursors(c, table) if _incremental(c) else _Replays(c, table) for c in constraints]

    # Per row (host): ids generated so far, the constraint's state, the running log-prob, the mask
    # row. Only the first row of each sample is alive at the start, so the first free step expands
    # one hypothesis into k distinct ones.
    generated: list[tuple[int, ...]] = [()] * n
    states: list[Any] = [drivers[r // k].start() if r % k == 0 else None for r in range(n)]
    scores = [0.0 if r % k == 0 else neg_inf for r in range(n)]
    mask_rows = [ANY] * n
    finished: list[list[Hypothesis]] = [[] for _ in range(n_samples)]
    active = [True] * n_samples
    tokens = [prefixes[i][0] for i in range(n_samples) for _ in range(k)]
    t = 0  # position of the tokens being fed
    # The samples whose rows the decoder holds, in its row order (sample live[p] owns decoder rows
    # p*k .. p*k+k-1), and each sample's place in that order. Only shrinks, through `decoder.select`.
    prunable = prune_at is not None and callable(getattr(decoder, "select", None))
    live = list(range(n_samples))
    place = list(range(n_samples))

    def finish(i: int, gen: tuple[int, ...], logprob: float) -> None:
        out = gen[:-1] if gen and gen[-1] == eos_id else gen
        norm = logprob / max(len(gen), 1) ** length_penalty
        finished[i].append(Hypothesis(tokens=list(out), score=norm, logprob=logprob))

    while any(active):
        fed = tokens if len(live) == n_samples else [tokens[r] for i in live for r in range(i * k, i * k + k)]
        logits = decoder.step(torch.tensor(fed, dtype=torch.long))
        if table.rows is None:
            table.build(logits.shape[-1], logits.device)
        vocab = logits.shape[-1]
        device = logits.device
        index = list(range(n))
        searching: list[int] = []
        for i in live:
            if not active[i]:
                continue
            if t + 1 < len(prefixes[i]):  # still forcing this sample's prefix
                tokens[i * k:(i + 1) * k] = [prefixes[i][t + 1]] * k
                continue
            if max_new_tokens[i] <= 0:
                finish(i, (), 0.0)
                active[i] = False
                continue
            searching.append(i)
            for r in range(i * k, i * k + k):
                if scores[r] != neg_inf:
                    mask_rows[r] = drivers[i].mask(states[r], generated[r])
        if searching:
            rows = [r for i in searching for r in range(i * k, i * k + k)]
            if len(searching) < len(live):  # the searching samples' decoder rows
                at = [place[i] * k + j for i in searching for j in range(k)]
                logits = logits.index_select(0, torch.tensor(at, device=device))
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            allowed = table.rows.index_select(0, torch.tensor([mask_rows[r] for r in rows], device=device))
            running = torch.tensor([scores[r] for r in rows], dtype=logprobs.dtype, device=device)
            cand = (torch.where(allowed, logprobs, neg_inf) + running[:, None]).view(len(searching), k * vocab)
            # 2k candidates: enough to refill k beams even if k of them finish at this step.
            top_scores, top_ids = cand.topk(min(2 * k, k * vocab), dim=1)
            # The step's one device-to-host copy: 2k (score, flat id) pairs per searching sample.
            top = torch.stack((top_scores.double(), top_ids.double())).tolist()
            for s, i in enumerate(searching):
                driver, cap = drivers[i], max_new_tokens[i]
                survivors: list[tuple[float, int, int, tuple[int, ...], Any]] = []
                for rank, (score, flat) in enumerate(zip(top[0][s], top[1][s])):
                    if score == neg_inf or len(survivors) == k:
                        break
                    j, tok = divmod(int(flat), vocab)
                    r = i * k + j
                    gen = generated[r] + (tok,)
                    if tok == eos_id:
                        ends, state = True, None
                    else:
                        state, ends = driver.advance(states[r], gen)
                        ends = ends or len(gen) >= cap
                    if ends:
                        if rank < k:  # like fairseq: only a top-k candidate may end the search's beams
                            finish(i, gen, score)
                    else:
                        survivors.append((score, r, tok, gen, state))
                if len(finished[i]) >= k or not survivors:
                    active[i] = False
                for j in range(k):
                    r = i * k + j
                    if j < len(survivors):
                        scores[r], index[r], tokens[r], generated[r], states[r] = survivors[j]
                    else:  # fewer live candidates than beams: park the row as dead
                        scores[r], index[r], tokens[r], generated[r], states[r] = neg_inf, i * k, eos_id, (), None
        if not any(active):
            break
        # Row by decoder row, where it continues from (index[r] stays within r's sample).
        moved = index if len(live) == n_samples else [place[i] * k + index[r] - i * k
                                                      for i in live for r in range(i * k, i * k + k)]
        keep = [i for i in live if active[i]]
        if prunable and len(keep) < len(live) and len(live) - len(keep) >= prune_at * len(live):
            # Drop the finished samples' rows and reorder the rest in one copy.
            decoder.select(torch.tensor([moved[place[i] * k + j] for i in keep for j in range(k)], dtype=torch.long))
            live = keep
            for p, i in enumerate(live):
                place[i] = p
        else:  # finished samples' rows stay, fed and never read, until enough of them can go
            decoder.reorder(torch.tensor(moved, dtype=torch.long))
        t += 1

    results = []
    for i in range(n_samples):
        if not finished[i]:  # no allowed id at all: an empty output is the only honest answer
            results.append(Hypothesis(tokens=[], score=float("-inf"), logprob=float("-inf")))
        else:
            results.append(max(finished[i], key=lambda h: h.score))
    return results
