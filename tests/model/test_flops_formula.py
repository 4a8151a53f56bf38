"""bench/throughput.py's analytic model FLOPs (6·N·D + attention, written out for an encoder-decoder)
agree with the FLOPs torch counts running the same training step, so its MFU means what it says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ofasys.model import build_model

from .helpers import make_batch, tiny_config

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dims", [dict(d_model=32, ffn_dim=64), dict(d_model=64, ffn_dim=256, encoder_layers=3)])
def test_analytic_flops_match_counted_flops(dims):
    bench = load_bench()
    model = build_model(tiny_config(dropout=0.0, **dims), seed=0).train()
    batch = make_batch(seed=1, batch=4, dec_len=8)
    analytic = bench.analytic_flops(model, batch)
    counted = bench.counted_flops(model, batch, label_smoothing=0.1)
    # The conv image stem is counted as a patch embedding (an under-count), the rest is exact matmuls.
    assert counted == pytest.approx(analytic, rel=0.15)
    assert analytic > 0


def test_real_tokens_count_an_image_as_its_grid_of_positions():
    bench = load_bench()
    model = build_model(tiny_config(), seed=0).eval()
    batch = make_batch(seed=1, batch=3, dec_len=6)  # text 5/3/1, a 32-px image, text 2/4/3; 6 decoder inputs
    grid = 4  # the conv stem's stride 8 over 32 px
    text = (5 + 3 + 1) + (2 + 4 + 3)
    decoder = int((batch.decoder_input != 0).sum())
    assert bench.real_tokens(model, batch, pad_id=0) == text + 3 * grid * grid + decoder
