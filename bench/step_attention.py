"""One decoding step's attention, the ways it could be computed, side by side on the same inputs.

What picked `CachedDecoder`'s attention (a decision, not a goal): for one new position per row, with
`--beams` rows per sample,

- cross-attention: SDPA over a copy of the sample's keys/values/mask per row (the cache as it was),
  SDPA with the beams as the query length over one copy per sample, and the two matmuls of
  `Attention._attend_shared` (pre-scaled, pre-transposed keys, additive bias, softmax);
- self-attention over a `--cache`-long per-row cache: SDPA vs the same two matmuls.

Shapes default to the demo's caption test batch (64 samples, 78 encoder slots, 4 heads of 32).
Timings are this process's CPU time on one thread, the fastest of `--repeats` rounds, each side
alternating; outputs are checked equal (to float rounding) before anything is timed.

    .venv/bin/python bench/step_attention.py [--samples 64] [--beams 3] [--slots 78] [--cache 10]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F


def fastest(repeats: int, calls: int, fns: dict) -> dict:
    """name -> fastest seconds per call over `repeats` rounds of `calls` calls, alternating."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.process_time() - start) / calls)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--slots", type=int, default=78, help="encoder positions (cross-attention keys)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--cache", type=int, default=10, help="decoded positions (self-attention keys)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b, g, s, h, hd = args.samples, args.beams, args.slots, args.heads, args.head_dim
    n = b * g
    q = torch.randn(b, h, g, hd)  # a sample's beams, as one attention's queries
    k, v = torch.randn(b, h, s, hd), torch.randn(b, h, s, hd)
    mask = torch.ones(b, 1, 1, s, dtype=torch.bool)
    mask[::2, ..., s * 3 // 4:] = False  # some padding
    rows_q = q.transpose(1, 2).reshape(n, 1, h, hd).transpose(1, 2)  # the same queries, one per row
    rows_k, rows_v, rows_mask = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)
    keys = (k / math.sqrt(hd)).transpose(-1, -2).contiguous()
    bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))

    cross = {
        "SDPA, a copy per row": lambda: F.scaled_dot_product_attention(rows_q, rows_k, rows_v, attn_mask=rows_mask),
        "SDPA, beams as queries": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "matmuls, beams as queries": lambda: torch.matmul((torch.matmul(q, keys) + bias).softmax(-1), v),
    }
    per_sample = cross["SDPA, a copy per row"]().transpose(1, 2).reshape(b, g, h, hd).transpose(1, 2)
    for name in ("SDPA, beams as queries", "matmuls, beams as queries"):
        torch.testing.assert_close(cross[name](), per_sample, atol=1e-5, rtol=1e-5)
    sq, sk, sv = torch.randn(n, h, 1, hd), torch.randn(n, h, args.cache, hd), torch.randn(n, h, args.cache, hd)
    scale = 1.0 / math.sqrt(hd)
    own = {
        "SDPA": lambda: F.scaled_dot_product_attention(sq, sk, sv),
        "matmuls": lambda: torch.matmul(torch.matmul(sq * scale, sk.transpose(-1, -2)).softmax(-1), sv),
    }
    torch.testing.assert_close(own["matmuls"](), own["SDPA"](), atol=1e-5, rtol=1e-5)

    for title, fns in ((f"cross-attention, {b} samples x {g} beams, {s} slots", cross),
                       (f"self-attention, {n} rows, {args.cache} cached positions", own)):
        best = fastest(args.repeats, args.calls, fns)
        first = next(iter(best.values()))
        print(title + ": " + "; ".join(f"{name} {1e6 * t:.0f} us ({first / t:.2f}x)" for name, t in best.items()))


if __name__ == "__main__":
    main()
