"""Stream-time corruption of token runs: BART-style span masking (`mask_ratio`) and token noise
(`noise_ratio`).

This is random per epoch, so it happens at collation on the materialised ids, never in the shards.
At evaluation the same functions run with a generator seeded by the sample key, so evaluation inputs
are reproducible.
"""

from __future__ import annotations

import hashlib

import numpy as np

POISSON_LAMBDA = 3.0
"""Mean span length, as in BART's text infilling."""


def key_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator determined by `seed` and `parts` (e.g. the sample key and column)."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def choose_spans(n: int, ratio: float, rng: np.random.Generator, poisson_lambda: float = POISSON_LAMBDA) -> np.ndarray:
    """Boolean mask over n positions covering exactly round(ratio * n) positions with spans.

    Span lengths are Poisson(lambda), clipped to >= 1 and to what is left to mask; spans are placed
    at random where they neither overlap nor touch an earlier span (so each stays one `<mask>`).
    When no such place is found after a few tries, single free positions fill the remainder.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    masked = np.zeros(n, dtype=bool)
    target = int(round(ratio * n))
    done = 0
    failures = 0
    while done < target:
        length = int(min(max(1, rng.poisson(poisson_lambda)), target - done))
        start = int(rng.integers(0, n - length + 1))
        lo, hi = max(0, start - 1), min(n, start + length + 1)
        if masked[lo:hi].any():
            failures += 1
            if failures > 20:
                free = np.flatnonzero(~masked)
                pick = rng.choice(free, size=target - done, replace=False)
                masked[pick] = True
                break
            continue
        masked[start : start + length] = True
        done += length
    return masked


def span_mask(
    tokens: np.ndarray, ratio: float, rng: np.random.Generator, mask_id: int, poisson_lambda: float = POISSON_LAMBDA
) -> np.ndarray:
    """Replace spans covering round(ratio * len) tokens by one `mask_id` each (BART text infilling)."""
    tokens = np.asarray(tokens)
    if ratio <= 0 or tokens.size == 0:
        return tokens.copy()
    masked = choose_spans(tokens.size, ratio, rng, poisson_lambda)
    keep = ~masked
    # a span's first position becomes the mask token, the rest of the span is dropped
    starts = masked & ~np.concatenate([[False], masked[:-1]])
    out = tokens.copy()
    out[starts] = mask_id
    return out[keep | starts]


def token_noise(tokens: np.ndarray, ratio: float, rng: np.random.Generator, candidates: range) -> np.ndarray:
    """Replace each token with probability `ratio` by a uniformly drawn id from `candidates`."""
    tokens = np.asarray(tokens)
    if ratio <= 0 or tokens.size == 0:
        return tokens.copy()
    hit = rng.random(tokens.size) < ratio
    out = tokens.copy()
    out[hit] = rng.integers(candidates.start, candidates.stop, size=int(hit.sum()))
    return out
