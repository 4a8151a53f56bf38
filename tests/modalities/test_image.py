import numpy as np
import pytest
from PIL import Image

from ofasys.modalities import MODALITIES, RejectRow


def test_png_bytes_resized_with_original_size(ctx, png):
    out = MODALITIES["IMAGE"].materialise(png(40, 20), {}, ctx)
    assert out.array.shape == (32, 32, 3) and out.array.dtype == np.uint8
    assert out.meta == {"width": 40, "height": 20}


def test_deterministic_bicubic(ctx, png):
    data = png(50, 30, seed=3)
    a = MODALITIES["IMAGE"].materialise(data, {}, ctx).array
    b = MODALITIES["IMAGE"].materialise(data, {}, ctx).array
    ref = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(a, b) and np.array_equal(a, ref)


def test_other_inputs(ctx, png, tmp_path):
    enc = MODALITIES["IMAGE"]
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
        MODALITIES["IMAGE"].materialise(value, {}, ctx)
    assert "0x" not in e.value.reason  # no object addresses: rejects.jsonl must be deterministic


def test_truncated_png_rejected(ctx, png):
    data = png(30, 30)
    with pytest.raises(RejectRow, match="image could not be decoded"):
        MODALITIES["IMAGE"].materialise(data[: len(data) // 2], {}, ctx)


def _png_of(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_16bit_png_is_scaled_not_saturated(ctx):
    """A real 16-bit greyscale PNG (PIL mode I;16) at the stored size: every channel is x / 257."""
    import io

    deep = np.random.default_rng(0).integers(0, 65536, size=(32, 32), dtype=np.uint16)
    data = _png_of(deep)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = MODALITIES["IMAGE"].materialise(data, {}, ctx)
    assert out.meta == {"width": 32, "height": 32}
    assert np.array_equal(out.array, np.repeat(np.rint(deep / 257.0).astype(np.uint8)[..., None], 3, axis=2))
    assert (out.array == 255).mean() < 0.01  # PIL's own convert("RGB") makes ~99% of these pixels 255
    # resized like any 8-bit image of the same (scaled) pixels
    wide = np.random.default_rng(1).integers(0, 65536, size=(24, 40), dtype=np.uint16)
    out = MODALITIES["IMAGE"].materialise(_png_of(wide), {}, ctx)
    eight = MODALITIES["IMAGE"].materialise(np.rint(wide / 257.0).astype(np.uint8), {}, ctx)
    assert out.meta == {"width": 40, "height": 24} and np.array_equal(out.array, eight.array)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_arrays_are_scaled(ctx, channels):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, size=(32, 32, channels), dtype=np.uint16)
    arr = MODALITIES["IMAGE"].materialise(deep, {}, ctx).array
    assert np.array_equal(arr, np.rint(deep[..., :3] / 257.0).astype(np.uint8))
    big_endian = deep.astype(">u2")
    assert np.array_equal(MODALITIES["IMAGE"].materialise(big_endian, {}, ctx).array, arr)


def test_32bit_int_and_float_images_scale_by_their_range(ctx):
    full = np.iinfo(np.int32).max
    ints = np.array([[0, full // 2, full]] * 32, np.int32)[:, [0, 1, 2] * 11][:, :32]
    img = Image.fromarray(ints)
    assert img.mode == "I"
    arr = MODALITIES["IMAGE"].materialise(img, {}, ctx).array
    assert np.array_equal(arr[..., 0], np.rint(ints / full * 255).astype(np.uint8))
    floats = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    f_img = Image.fromarray(floats)
    assert f_img.mode == "F"
    arr = MODALITIES["IMAGE"].materialise(f_img, {}, ctx).array
    assert np.array_equal(arr[..., 1], np.rint(floats.astype(np.float64) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "value,reason",
    [
        (Image.fromarray(np.array([[-5, 3]], np.int32)), "I image has pixel values outside 0..2147483647"),
        (Image.fromarray(np.array([[0.5, 2.0]], np.float32)), "F image is float but not in [0, 1]"),
        (np.array([[0.5, np.nan]], np.float32), "image array is float but not in [0, 1]"),
        (np.zeros((4, 4), np.int64), "image array must be uint8, uint16, uint32 or float in [0, 1] (got int64)"),
        (Image.new("La", (4, 4)), "image could not be converted to RGB (ValueError, mode La)"),
    ],
)
def test_unconvertible_pixels_are_rejected_with_a_reason(ctx, value, reason):
    with pytest.raises(RejectRow) as e:
        MODALITIES["IMAGE"].materialise(value, {}, ctx)
    assert e.value.reason.startswith(reason)
