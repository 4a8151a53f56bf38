"""The detection demo generator: 0-3 non-overlapping digits per image, a box and a label per digit."""

from __future__ import annotations

import collections
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import GENERATORS, generate, images, table_meta, tasks


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _box(text: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in text.split(","))
    return x0, y0, x1, y1


@pytest.fixture
def recorded(monkeypatch):
    """Record every Scene the generator renders, in order."""
    scenes = []
    real = images.render

    def render(*args, **kwargs):
        scene = real(*args, **kwargs)
        scenes.append(scene)
        return scene

    monkeypatch.setattr(tasks.images, "render", render)
    return scenes


def test_registered_with_list_of_string_columns():
    assert GENERATORS["detection"] is tasks.detection
    table = generate("detection", "valid", 5, seed=1)
    assert table.column_names == ["img", "boxes", "labels"]
    assert pa.types.is_binary(table.schema.field("img").type)
    for name in ("boxes", "labels"):
        assert table.schema.field(name).type == pa.list_(pa.string())
    meta = table_meta(table)
    assert (meta["generator"], meta["split"], meta["size"], meta["seed"]) == ("detection", "valid", 5, 1)


def test_same_arguments_same_bytes_and_growing_only_appends():
    a = generate("detection", "train", 16, seed=3, corrupt=4)
    b = generate("detection", "train", 16, seed=3, corrupt=4)
    assert _parquet_bytes(a) == _parquet_bytes(b)
    assert a.to_pylist() == b.to_pylist()
    assert not a.equals(generate("detection", "train", 16, seed=4, corrupt=4))
    assert not a.equals(generate("detection", "valid", 16, seed=3, corrupt=4))
    small, large = generate("detection", "train", 6, seed=3), generate("detection", "train", 11, seed=3)
    assert large.slice(0, 6).to_pylist() == small.to_pylist()


def test_damage_leaves_the_clean_rows_unchanged():
    clean = generate("detection", "train", 30, seed=5).to_pylist()
    damaged = generate("detection", "train", 30, seed=5, corrupt=8)
    bad = set(table_meta(damaged)["corrupt_rows"])
    assert len(bad) == 8
    for row, rec in enumerate(damaged.to_pylist()):
        if row not in bad:
            assert rec == clean[row]


def test_splits_use_disjoint_digit_instances(recorded):
    pools = {s: set(np.concatenate(images.digit_pools()[s]).tolist()) for s in images.SPLITS}
    used = {}
    for split in images.SPLITS:
        start = len(recorded)
        generate("detection", split, 40, seed=9)
        used[split] = {d.index for scene in recorded[start:] for d in scene.digits}
        assert used[split] and used[split] <= pools[split]
    assert not used["train"] & used["valid"] and not used["train"] & used["test"]
    assert not used["valid"] & used["test"]


def test_boxes_lie_in_the_image_do_not_overlap_and_each_has_its_digit_word(recorded):
    table = generate("detection", "test", 60, seed=2)
    assert len(recorded) == 60
    classes = images._digits()[1]
    for rec, scene in zip(table.to_pylist(), recorded):
        boxes = [_box(b) for b in rec["boxes"]]
        assert len(rec["labels"]) == len(boxes) == len(scene.digits)
        assert set(rec["labels"]) <= set(images.WORDS)
        for (x0, y0, x1, y1), word, digit in zip(boxes, rec["labels"], scene.digits):
            assert 0 <= x0 < x1 <= images.CANVAS and 0 <= y0 < y1 <= images.CANVAS
            assert (x0, y0, x1, y1) == digit.box
            assert word == images.WORDS[classes[digit.index]]
        assert [(b[0], b[1]) for b in boxes] == sorted((b[0], b[1]) for b in boxes)  # left to right, then top
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[i], boxes[j]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (boxes[i], boxes[j])


def test_each_box_is_exactly_where_its_digit_changed_the_photo(recorded):
    table = generate("detection", "train", 60, seed=8)
    for rec, scene in zip(table.to_pylist(), recorded):
        img = _decode(rec["img"])
        assert img.shape == (images.CANVAS, images.CANVAS, 3)
        assert np.array_equal(img, scene.image)
        changed = np.any(img != scene.background, axis=2)
        inside = np.zeros_like(changed)
        for x0, y0, x1, y1 in map(_box, rec["boxes"]):
            ys, xs = np.nonzero(changed[y0:y1, x0:x1])
            # The ink touches all four edges of its box: the box is the digit's tight box.
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x1 - x0, y1 - y0)
            inside[y0:y1, x0:x1] = True
        assert not (changed & ~inside).any(), "a pixel changed outside every box"
        if not rec["boxes"]:
            assert np.array_equal(img, scene.background)  # no object: the bare photo


def test_count_distribution_covers_zero_to_three():
    boxes = generate("detection", "train", 200, seed=1).column("boxes").to_pylist()
    counts = collections.Counter(len(b) for b in boxes)
    assert set(counts) == {0, 1, 2, 3}
    assert 5 <= counts[0] <= 40  # about 0.1 of 200
    for n in (1, 2, 3):
        assert 40 <= counts[n] <= 80  # about 0.3 of 200


def test_corrupt_rows_are_exactly_those_recorded():
    table = generate("detection", "train", 40, seed=6, corrupt=10)
    meta = table_meta(table)
    bad_img, bad_label = meta["corrupt_image_rows"], meta["corrupt_label_rows"]
    assert len(bad_img) == 5 and len(bad_label) == 5 and not set(bad_img) & set(bad_label)
    assert sorted(bad_img + bad_label) == meta["corrupt_rows"]
    for row, rec in enumerate(table.to_pylist()):
        if row in bad_img:
            with pytest.raises(Exception):
                _decode(rec["img"])
        else:
            assert _decode(rec["img"]).shape == (images.CANVAS, images.CANVAS, 3)
        if row in bad_label:
            assert len(rec["boxes"]) >= 1
            assert len(rec["labels"]) == len(rec["boxes"]) - 1 >= 0
        else:
            assert len(rec["labels"]) == len(rec["boxes"])
    assert table_meta(generate("detection", "train", 40, seed=7, corrupt=10))["corrupt_rows"] != meta["corrupt_rows"]


def test_a_label_row_whose_scene_drew_no_digit_gets_one_with_digits():
    size = 60
    clean = generate("detection", "train", size, seed=0).column("boxes").to_pylist()
    table = generate("detection", "train", size, seed=0, corrupt=size)  # every row damaged
    bad_label = table_meta(table)["corrupt_label_rows"]
    assert any(not clean[row] for row in bad_label), "the case this test is about did not occur"
    for row, rec in enumerate(table.to_pylist()):
        if row in bad_label:
            assert len(rec["boxes"]) >= 1 and len(rec["labels"]) == len(rec["boxes"]) - 1
        else:
            assert rec["boxes"] == clean[row]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        generate("detection", "validation", 3, seed=0)
    with pytest.raises(ValueError, match="corrupt"):
        generate("detection", "train", 3, seed=0, corrupt=4)
