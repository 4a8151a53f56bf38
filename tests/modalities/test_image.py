import numpy as np
import pytest
from PIL import Image

from ofasys.modalities import ENCODERS, RejectRow


def test_png_bytes_resized_with_original_size(ctx, png):
    out = ENCODERS["IMAGE"].materialise(png(40, 20), {}, ctx)
    assert out.array.shape == (32, 32, 3) and out.array.dtype == np.uint8
    assert out.meta == {"width": 40, "height": 20}


def test_deterministic_bicubic(ctx, png):
    data = png(50, 30, seed=3)
    a = ENCODERS["IMAGE"].materialise(data, {}, ctx).array
    b = ENCODERS["IMAGE"].materialise(data, {}, ctx).array
    ref = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(a, b) and np.array_equal(a, ref)


def test_other_inputs(ctx, png, tmp_path):
    enc = ENCODERS["IMAGE"]
    (tmp_path / "x.png").write_bytes(png(16, 8))
    ctx.base_dir = tmp_path
    assert enc.materialise("x.png", {}, ctx).meta == {"width": 16, "height": 8}
    assert enc.materialise(str(tmp_path / "x.png"), {}, ctx).meta == {"width": 16, "height": 8}
    assert enc.materialise({"bytes": png(10, 12), "path": None}, {}, ctx).meta == {"width": 10, "height": 12}
    gray = np.zeros((9, 7), np.uint8)
    out = enc.materialise(gray, {}, ctx)
    assert out.meta == {"width": 7, "height": 9} and out.array.shape == (32, 32, 3)
    rgba = Image.new("RGBA", (5, 6), (10, 20, 30, 0))
    assert enc.materialise(rgba, {}, ctx).array[0, 0].tolist() == [10, 20, 30]
    jpeg = png(20, 20, fmt="JPEG")
    assert enc.materialise(jpeg, {}, ctx).meta == {"width": 20, "height": 20}


@pytest.mark.parametrize(
    "value,reason",
    [
        (b"\x89PNG\r\n\x1a\n not really a png", "image could not be decoded"),
        (b"", "missing image"),
        (None, "missing image"),
        ("does/not/exist.png", "image file not found"),
        (np.zeros((4, 4, 2), np.uint8), "image array must be"),
        (12, "unsupported image value"),
    ],
)
def test_bad_images_rejected(ctx, value, reason):
    with pytest.raises(RejectRow, match=reason) as e:
        ENCODERS["IMAGE"].materialise(value, {}, ctx)
    assert "0x" not in e.value.reason  # no object addresses: rejects.jsonl must be deterministic


def test_truncated_png_rejected(ctx, png):
    data = png(30, 30)
    with pytest.raises(RejectRow, match="image could not be decoded"):
        ENCODERS["IMAGE"].materialise(data[: len(data) // 2], {}, ctx)
