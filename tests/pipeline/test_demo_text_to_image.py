"""The text-to-image demo generator: the caption (nearly) determines the image, splits hold out digits."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from pipeline.demo import GENERATORS, generate, images, table_meta, tasks

BOX = 48
"""Side of the centred box holding any `named_scene` digit's ink (the largest ink box is 43 x 38)."""


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _outside_box(image: np.ndarray) -> np.ndarray:
    start = (images.CANVAS - BOX) // 2
    keep = np.ones(image.shape[:2], dtype=bool)
    keep[start : start + BOX, start : start + BOX] = False
    return image[keep]


def _at_32px(image: np.ndarray) -> np.ndarray:
    """Area downscale by 2, as the tasks do before VQ coding."""
    h, w, c = image.shape
    return image.astype(np.float64).reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


@pytest.fixture
def drawn(monkeypatch):
    """Record every (photo, label, index) the generator renders, in order."""
    calls = []
    real = images.named_scene

    def named_scene(photo, label, index):
        calls.append((photo, label, index))
        return real(photo, label, index)

    monkeypatch.setattr(tasks.images, "named_scene", named_scene)
    return calls


def test_registered_under_its_name():
    assert GENERATORS["text_to_image"] is tasks.text_to_image


def test_same_arguments_give_identical_tables_and_png_bytes():
    a = generate("text_to_image", "train", 10, seed=4, corrupt=2)
    b = generate("text_to_image", "train", 10, seed=4, corrupt=2)
    assert a.equals(b)
    assert a.column("img").to_pylist() == b.column("img").to_pylist()
    assert table_meta(a) == table_meta(b)
    assert not generate("text_to_image", "train", 10, seed=5, corrupt=2).equals(a)


def test_growing_a_split_only_appends_rows():
    small = generate("text_to_image", "valid", 4, seed=3)
    assert generate("text_to_image", "valid", 7, seed=3).slice(0, 4).equals(small)


def test_splits_use_disjoint_digit_instances(drawn):
    used = {}
    for split in images.SPLITS:
        start = len(drawn)
        generate("text_to_image", split, 25, seed=1)
        used[split] = {index for _, _, index in drawn[start:]}
        pool = set(np.concatenate(images.digit_pools()[split]).tolist())
        assert used[split] and used[split] <= pool
    for a, b in itertools.combinations(images.SPLITS, 2):
        assert not used[a] & used[b]


def test_caption_names_the_digit_and_the_photo(drawn):
    table = generate("text_to_image", "test", 20, seed=2)
    labels = images._digits()[1]
    for cap, (photo, label, index) in zip(table.column("cap").to_pylist(), drawn):
        assert labels[index] == label
        assert cap == f"a handwritten {images.WORDS[label]} on the {photo.replace('_', ' ')} photo"


def test_same_caption_same_background_outside_the_digit():
    table = generate("text_to_image", "train", 60, seed=3)
    by_caption: dict[str, list[np.ndarray]] = {}
    for cap, png in zip(table.column("cap").to_pylist(), table.column("img").to_pylist()):
        by_caption.setdefault(cap, []).append(_decode(png))
    repeated = [imgs for imgs in by_caption.values() if len(imgs) > 1]
    assert repeated, "no caption repeated: raise the size"
    for imgs in repeated:
        for other in imgs[1:]:
            assert np.array_equal(_outside_box(imgs[0]), _outside_box(other))
            assert not np.array_equal(imgs[0], other)  # different handwriting inside the box


def test_background_is_the_named_crop_whatever_the_split_and_seed(drawn):
    for split, seed in (("train", 1), ("test", 9)):
        start = len(drawn)
        table = generate("text_to_image", split, 6, seed=seed)
        for png, (photo, _, _) in zip(table.column("img").to_pylist(), drawn[start:]):
            assert np.array_equal(_outside_box(_decode(png)), _outside_box(images.named_background(photo)))


def test_corrupt_rows_are_undecodable_at_the_recorded_positions():
    table = generate("text_to_image", "train", 20, seed=6, corrupt=3)
    bad = table_meta(table)["corrupt_rows"]
    assert len(bad) == 3 and bad == sorted(set(bad))
    for row, png in enumerate(table.column("img").to_pylist()):
        if row in bad:
            with pytest.raises(Exception):
                _decode(png)
        else:
            assert _decode(png).shape == (64, 64, 3)
    assert table_meta(generate("text_to_image", "train", 20, seed=7, corrupt=3))["corrupt_rows"] != bad


def test_named_photos_have_clearly_different_mean_colours_at_32px():
    means = {p: _at_32px(images.named_background(p)).reshape(-1, 3).mean(axis=0) for p in images.NAMED_PHOTOS}
    assert len(means) >= 6
    for a, b in itertools.combinations(images.NAMED_PHOTOS, 2):
        assert np.linalg.norm(means[a] - means[b]) > 20, (a, b)


def test_named_scene_rejects_a_label_that_is_not_the_digits_class():
    index = int(images.digit_pools()["train"][3][0])
    assert images.named_scene("moon", 3, index).shape == (64, 64, 3)
    with pytest.raises(ValueError):
        images.named_scene("moon", 4, index)
    with pytest.raises(ValueError):
        images.named_background("brick")
