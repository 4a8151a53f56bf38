"""The VQ image tokenizer learns codes that rebuild unseen images better than the mean image, is
byte-deterministic, and refuses files and inputs that do not match it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ofasys.vq import VQConfig, VQError, load_vq, save_vq, train_vq

CONFIG = VQConfig(image_size=16, grid=8, codebook_size=32, code_dim=8, channels=16, steps=200, batch_size=32, seed=5)


def _digit_images(n: int, offset: int = 0) -> np.ndarray:
    """Real handwritten digits, upscaled to 16 px and tinted per image (so colour is learned too)."""
    digits = load_digits().images[offset : offset + n] / 16.0  # N x 8 x 8 in [0, 1]
    big = np.kron(digits, np.ones((2, 2)))[..., None]  # N x 16 x 16 x 1
    tint = np.random.default_rng(offset).uniform(0.3, 1.0, (n, 1, 1, 3))
    return (255 * (0.1 + 0.9 * big * tint)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def trained():
    return train_vq(_digit_images(600), CONFIG)


def test_codes_rebuild_unseen_images_far_better_than_the_mean_image(trained):
    train, held_out = _digit_images(600), _digit_images(200, offset=1000)
    mean_image_error = float(np.abs(held_out.astype(float) - train.mean(0)).mean())
    codes = trained.encode(held_out)
    assert codes.shape == (200, 8, 8) and codes.dtype == np.int16
    assert len(np.unique(codes)) >= 8  # the codebook is used, not collapsed onto a few codes
    assert trained.reconstruction_error(held_out) < 0.5 * mean_image_error


def test_same_images_and_seed_give_the_same_file(tmp_path, trained):
    again = train_vq(_digit_images(600), CONFIG)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert save_vq(trained, a) == save_vq(again, b)
    assert a.read_bytes() == b.read_bytes()


def test_a_saved_tokenizer_loads_to_the_same_codes_and_fingerprint(tmp_path, trained):
    path = tmp_path / "vq.safetensors"
    fingerprint = save_vq(trained, path)
    loaded = load_vq(path, expect_fingerprint=fingerprint)
    images = _digit_images(20, offset=1500)
    assert loaded.fingerprint == fingerprint == trained.fingerprint
    np.testing.assert_array_equal(loaded.encode(images), trained.encode(images))
    np.testing.assert_array_equal(loaded.decode(trained.encode(images)), trained.decode(trained.encode(images)))


def test_damaged_missing_or_foreign_files_are_refused(tmp_path, trained):
    path = tmp_path / "vq.safetensors"
    fingerprint = save_vq(trained, path)
    with pytest.raises(VQError, match="differs from the .* the data was made with"):
        load_vq(path, expect_fingerprint="0" * 64)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one weight's bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(VQError, match="do not match the fingerprint"):
        load_vq(path)
    path.write_bytes(b"not safetensors")
    with pytest.raises(VQError, match="not a readable safetensors file"):
        load_vq(path)
    with pytest.raises(VQError, match="run `dvc repro vq`"):
        load_vq(tmp_path / "absent.safetensors")
    assert fingerprint


def test_inputs_of_the_wrong_shape_or_range_are_refused(trained):
    with pytest.raises(VQError, match="N x 16 x 16 x 3"):
        trained.encode(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(VQError, match=r"codes must be in \[0, 32\)"):
        trained.decode(np.full((1, 8, 8), 32))
    with pytest.raises(VQError, match="N x 8 x 8"):
        trained.decode(np.zeros((1, 4, 4), np.int64))


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 24, "grid": 8}, "image_size / grid must be a power of two"),
    ({"image_size": 8, "grid": 8}, "image_size / grid must be a power of two"),
    ({"codebook_size": 1}, "codebook_size must be at least 2"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"ema_decay": 1.0}, "ema_decay in"),
])
def test_impossible_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQConfig(**kwargs)
