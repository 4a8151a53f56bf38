import numpy as np
import pytest

from ofasys.data.masking import choose_spans, key_rng, span_mask, token_noise

MASK = 4


@pytest.mark.parametrize("n,ratio", [(10, 0.3), (50, 0.15), (7, 0.5), (100, 0.3), (3, 1.0)])
def test_span_mask_covers_exactly_the_ratio(n, ratio):
    rng = np.random.default_rng(0)
    for _ in range(20):
        chosen = choose_spans(n, ratio, rng)
        assert chosen.sum() == round(ratio * n)


def test_each_span_becomes_one_mask():
    rng = np.random.default_rng(1)
    tokens = np.arange(100, 160)
    for _ in range(20):
        state = rng.bit_generator.state
        chosen = choose_spans(len(tokens), 0.3, rng)
        rng.bit_generator.state = state
        out = span_mask(tokens, 0.3, rng, MASK)
        runs = int((chosen & ~np.concatenate([[False], chosen[:-1]])).sum())
        assert (out == MASK).sum() == runs
        assert len(out) == len(tokens) - chosen.sum() + runs
        assert out[out != MASK].tolist() == tokens[~chosen].tolist()  # unmasked tokens keep their order


def test_spans_are_poisson_sized_on_average():
    rng = np.random.default_rng(2)
    lengths = []
    for _ in range(200):
        chosen = choose_spans(400, 0.3, rng)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], chosen.astype(int), [0]])))
        lengths += list(edges[1::2] - edges[::2])
    assert 2.0 < np.mean(lengths) < 4.0


def test_edge_cases_and_determinism():
    assert span_mask(np.array([], np.int64), 0.3, np.random.default_rng(0), MASK).size == 0
    t = np.arange(10, 20)
    assert np.array_equal(span_mask(t, 0.0, np.random.default_rng(0), MASK), t)
    a = span_mask(t, 0.3, key_rng(3, "valid-000000001", "text"), MASK)
    b = span_mask(t, 0.3, key_rng(3, "valid-000000001", "text"), MASK)
    assert np.array_equal(a, b)
    others = [span_mask(t, 0.3, key_rng(3, f"valid-00000000{i}", "text"), MASK) for i in range(2, 8)]
    assert any(not np.array_equal(a, o) for o in others)  # different keys, different masks
    with pytest.raises(ValueError):
        choose_spans(10, 1.5, np.random.default_rng(0))


def test_token_noise_ratio():
    rng = np.random.default_rng(0)
    t = np.full(10000, 7)
    out = token_noise(t, 0.2, rng, range(100, 200))
    changed = out != 7
    assert 0.17 < changed.mean() < 0.23
    assert out[changed].min() >= 100 and out[changed].max() < 200
