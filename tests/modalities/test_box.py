import numpy as np
import pytest

from ofasys.modalities import MODALITIES, RejectRow
from ofasys.modalities.box import dequantise, parse_box, quantise


@pytest.fixture
def box_ctx(ctx):
    ctx.columns["IMAGE"] = ["img"]
    ctx.meta["img"] = {"width": 200, "height": 100}
    return ctx


def test_box_to_bins(box_ctx, vocab):
    out = MODALITIES["BOX"].materialise("0,0,200,100", {}, box_ctx)
    assert out.array.dtype == np.int32
    assert [vocab.bin_index(t) for t in out.array] == [0, 0, 15, 15]
    assert out.ref == [0.0, 0.0, 200.0, 100.0]
    out = MODALITIES["BOX"].materialise([20.0, 10.0, 120.5, 60.0], {}, box_ctx)
    assert [vocab.bin_index(t) for t in out.array] == quantise([20, 10, 120.5, 60], 200, 100, 16)


@pytest.mark.parametrize("value", ["10, 20, 30, 40", "10 20 30 40", "[10,20,30,40]", (10, 20, 30, 40), np.array([10, 20, 30, 40.0])])
def test_parse_forms(value):
    assert parse_box(value) == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    "value,reason",
    [
        ("1,2,3", "malformed box"),
        ("a,b,c,d", "malformed box"),
        ("1,2,nan,4", "malformed box"),
        (None, "missing box"),
        (b"1,2,3,4", "malformed box"),
        ("0,0,201,50", "box out of range"),
        ("-1,0,20,50", "box out of range"),
        ("30,0,20,50", "box out of range"),
        ("10,50,20,50", "box out of range"),
    ],
)
def test_bad_boxes_rejected(box_ctx, value, reason):
    with pytest.raises(RejectRow, match=reason):
        MODALITIES["BOX"].materialise(value, {}, box_ctx)


def test_quantise_round_trip_within_one_bin():
    rng = np.random.default_rng(0)
    for num_bins in (16, 1000):
        for _ in range(200):
            w, h = rng.integers(10, 1000, size=2)
            box = sorted(rng.uniform(0, w, 2)) + sorted(rng.uniform(0, h, 2))
            box = [box[0], box[2], box[1], box[3]]
            back = dequantise(quantise(box, w, h, num_bins), w, h, num_bins)
            for c, b, s in zip(box, back, [w, h, w, h]):
                assert abs(c - b) <= s / (num_bins - 1) / 2 + 1e-9
