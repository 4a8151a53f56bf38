"""The search on hand-made decoders: small fakes of `StepDecoder` and `OutputPlan`."""

import math

import torch

from ofasys.generation import beam_search

EOS = 2


class FakePlan:
    """An OutputPlan stand-in: `allowed`/`done` from callables, and a length cap."""

    def __init__(self, allowed=lambda g: None, done=lambda g: bool(g) and g[-1] == EOS, max_new_tokens=8):
        self._allowed, self._done, self.max_new_tokens = allowed, done, max_new_tokens
        self.seen: list[list[int]] = []

    def allowed(self, generated):
        self.seen.append(list(generated))
        return self._allowed(generated)

    def done(self, generated):
        return self._done(generated)


class TableDecoder:
    """Logits are a function of each row's full history of fed tokens (no cache to get wrong)."""

    def __init__(self, rows: int, fn):
        self.history: list[list[int]] = [[] for _ in range(rows)]
        self.fn = fn

    def step(self, tokens):
        for row, tok in zip(self.history, tokens.tolist()):
            row.append(tok)
        return torch.stack([self.fn(h) for h in self.history])

    def reorder(self, index):
        assert len(index) == len(self.history)  # a reorder keeps every row
        self.history = [list(self.history[i]) for i in index.tolist()]


class PruningTableDecoder(TableDecoder):
    """A `TableDecoder` that can drop rows (`select`), recording how many rows each step ran."""

    def __init__(self, rows: int, fn):
        super().__init__(rows, fn)
        self.widths: list[int] = []

    def step(self, tokens):
        assert len(tokens) == len(self.history)  # the search feeds exactly the rows held
        self.widths.append(len(tokens))
        return super().step(tokens)

    def select(self, rows):
        assert len(rows) < len(self.history)  # only called to drop rows
        self.history = [list(self.history[i]) for i in rows.tolist()]


def random_fn(vocab: int, seed: int = 0):
    """A fixed random next-token distribution per history."""
    def fn(history):
        gen = torch.Generator().manual_seed(hash((seed, tuple(history))) % 2**31)
        return torch.randn(vocab, generator=gen) * 3
    return fn


def run(prefixes, plans, fn, beam=1, caps=None):
    decoder = TableDecoder(len(prefixes) * beam, fn)
    caps = caps or [p.max_new_tokens for p in plans]
    hyps = beam_search(decoder, prefixes, plans, beam_size=beam, eos_id=EOS, max_new_tokens=caps)
    return hyps, decoder


def test_greedy_is_the_argmax_rollout():
    fn = random_fn(12)
    hyps, _ = run([[1]], [FakePlan(max_new_tokens=6)], fn)
    history, out = [1], []
    for _ in range(6):
        tok = int(fn(history).argmax())
        if tok == EOS:
            break
        out.append(tok)
        history.append(tok)
    assert hyps[0].tokens == out


def test_beam_beats_myopic_greedy():
    """After <bos>: A=.6, B=.4. After A: A/B/eos nearly uniform. After B: eos=.99. Greedy takes A
    and wanders; a beam of 4 finds [B] (score log(.4*.99)/2 = -0.46)."""
    A, B = 3, 4

    def fn(history):
        p = torch.full((6,), 1e-6)
        last = history[-1]
        if len(history) == 1:
            p[A], p[B] = 0.6, 0.4
        elif history[1] == A:
            p[A], p[B], p[EOS] = 0.34, 0.33, 0.33
        elif last == B:
            p[EOS], p[A] = 0.99, 0.01
        return p.log()

    greedy, _ = run([[1]], [FakePlan(max_new_tokens=5)], fn, beam=1)
    beam, _ = run([[1]], [FakePlan(max_new_tokens=5)], fn, beam=4)
    assert greedy[0].tokens[0] == A
    assert beam[0].tokens == [B]
    assert beam[0].score >= greedy[0].score
    assert math.isclose(beam[0].score, math.log(0.4 * 0.99) / 2, rel_tol=1e-4)


def test_constraints_are_obeyed_per_hypothesis():
    bins = [10, 11, 12, 13]

    def allowed(g):
        assert all(t in bins for t in g)  # every hypothesis it is asked about obeyed it so far
        return bins if len(g) < 4 else [EOS]

    for beam in (1, 3):
        plans = [FakePlan(allowed=allowed, max_new_tokens=10) for _ in range(2)]
        hyps, _ = run([[1], [1, 5]], plans, random_fn(20, seed=beam), beam=beam)
        for h in hyps:
            assert len(h.tokens) == 4 and all(t in bins for t in h.tokens)
        assert all(len(g) <= 4 for p in plans for g in p.seen)


def test_done_and_length_cap_finish_hypotheses():
    no_eos = lambda g: [t for t in range(3, 9)]  # noqa: E731
    hyps, _ = run([[1]], [FakePlan(allowed=no_eos, done=lambda g: len(g) == 2)], random_fn(9))
    assert len(hyps[0].tokens) == 2
    hyps, _ = run([[1]], [FakePlan(allowed=no_eos, done=lambda g: False)], random_fn(9), beam=2, caps=[3])
    assert len(hyps[0].tokens) == 3
    hyps, _ = run([[1]], [FakePlan(allowed=lambda g: [])], random_fn(9))
    assert hyps[0].tokens == [] and hyps[0].score == float("-inf")


def test_per_sample_prefixes_of_different_lengths():
    prefixes = [[1], [1, 7, 8, 9], [1, 6]]
    fn = random_fn(12, seed=3)
    for beam in (1, 3):
        plans = [FakePlan(max_new_tokens=5) for _ in prefixes]
        hyps, decoder = run(prefixes, plans, fn, beam=beam)
        for i, (prefix, h) in enumerate(zip(prefixes, hyps)):
            # Every surviving row of sample i was fed exactly its prefix first...
            for row in decoder.history[i * beam:(i + 1) * beam]:
                assert row[:len(prefix)] == prefix
            # ...plans only ever see what came after it...
            assert plans[i].seen[0] == []
            # ...and the result equals searching this sample alone.
            alone, _ = run([prefix], [FakePlan(max_new_tokens=5)], fn, beam=beam)
            assert alone[0].tokens == h.tokens
