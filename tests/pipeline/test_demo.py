"""The demo generators: deterministic, honest splits, exact boxes, left-to-right captions, damage."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import GENERATORS, generate, images, table_meta, tasks, text


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def recorded(monkeypatch):
    """Record every Scene the generators render, in order."""
    scenes = []
    real = images.render

    def render(*args, **kwargs):
        scene = real(*args, **kwargs)
        scenes.append(scene)
        return scene

    monkeypatch.setattr(tasks.images, "render", render)
    return scenes


def test_registry_is_a_plain_dict_of_the_five_tasks():
    assert type(GENERATORS) is dict
    assert set(GENERATORS) == {"caption", "grounding", "vqa", "infill", "asr", "video_caption", "table_to_text", "text_to_sql",
                                "motion_label", "text_to_image", "detection", "tts"}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_bytes_different_seed_different(name):
    a = generate(name, "train", 12, seed=7, corrupt=2)
    b = generate(name, "train", 12, seed=7, corrupt=2)
    c = generate(name, "train", 12, seed=8, corrupt=2)
    assert _parquet_bytes(a) == _parquet_bytes(b)
    assert a.equals(b)
    assert not a.equals(c)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_schema_has_no_integer_columns(name):
    table = generate(name, "valid", 4, seed=1)
    assert table.num_rows == 4
    for field in table.schema:
        assert (pa.types.is_string(field.type) or pa.types.is_binary(field.type)
                or (pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type))), field


def test_growing_a_split_only_appends_rows_and_splits_differ():
    small = generate("caption", "train", 5, seed=3)
    large = generate("caption", "train", 9, seed=3)
    assert large.slice(0, 5).equals(small)
    assert not generate("caption", "valid", 5, seed=3).equals(small)


def test_images_are_64px_rgb_pngs_on_a_contrast_cut_photo():
    for png in generate("caption", "test", 10, seed=2).column("img").to_pylist():
        assert _decode(png).shape == (64, 64, 3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        bg = images.background(rng)
        # 128 +- 0.4 * 128: the photo is there but cannot outshine the digits.
        assert bg.min() >= 128 - 0.4 * 128 - 1e-9 and bg.max() <= 128 + 0.4 * 127 + 1e-9
        assert bg.std() > 0  # a real photo, not a flat colour


def test_boxes_are_tight_around_all_changed_pixels_and_do_not_overlap():
    rng = np.random.default_rng(11)
    for i in range(120):
        scene = images.render(rng, "train", 1 + i % 3, in_a_row=i % 2 == 0)
        changed = np.any(scene.image != scene.background, axis=2)
        inside = np.zeros_like(changed)
        for digit, alpha in zip(scene.digits, scene.alphas):
            x0, y0, x1, y1 = digit.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            ys, xs = np.nonzero(alpha)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == digit.box  # tight
            assert y1 - y0 >= 16  # a 24-32 px digit, not a speck
            inside[y0:y1, x0:x1] = True
        assert changed.any()
        assert not (changed & ~inside).any(), "ink outside every box"
        boxes = [d.box for d in scene.digits]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (boxes[a], boxes[b])


def test_digits_in_a_row_are_x_disjoint_and_listed_left_to_right():
    rng = np.random.default_rng(5)
    for _ in range(60):
        scene = images.render(rng, "valid", 2)
        (a, b) = scene.digits
        assert a.box[2] + images.GAP <= b.box[0]


def test_captions_read_the_digits_left_to_right(recorded):
    table = generate("caption", "train", 40, seed=4)
    caps = table.column("cap").to_pylist()
    assert len(recorded) == 40
    assert {c.count("to the left of") for c in caps} == {0, 1}
    for cap, scene in zip(caps, recorded):
        xs = [d.box[0] for d in scene.digits]
        assert xs == sorted(xs)
        words = [images.WORDS[d.label] for d in scene.digits]
        assert cap == tasks.describe(words)
        assert [w for w in cap.split() if w in images.WORDS] == words


def test_grounding_query_names_exactly_one_digit_and_region_is_its_box(recorded):
    table = generate("grounding", "test", 40, seed=4)
    for row, scene in zip(table.to_pylist(), recorded):
        matches = [d for d in scene.digits if d.word == row["query"]]
        assert len(matches) == 1
        assert row["region"] == ",".join(str(v) for v in matches[0].box)
        img = _decode(row["img"])
        assert np.array_equal(img, scene.image)


def test_vqa_answer_is_the_digit_count(recorded):
    table = generate("vqa", "train", 60, seed=4)
    answers = table.column("answer").to_pylist()
    assert set(table.column("question").to_pylist()) == {tasks.QUESTION}
    assert set(answers) == {"one", "two", "three"}
    for answer, scene in zip(answers, recorded):
        assert answer == images.WORDS[len(scene.digits)]


def test_digit_instances_are_held_out_between_splits(recorded):
    pools = images.digit_pools()
    sets = {s: set(np.concatenate(pools[s]).tolist()) for s in images.SPLITS}
    assert not sets["train"] & sets["valid"] and not sets["train"] & sets["test"]
    assert not sets["valid"] & sets["test"]
    assert len(sets["train"] | sets["valid"] | sets["test"]) == 1797
    assert len(sets["test"]) > 200 and len(sets["valid"]) > 200
    generate("caption", "test", 30, seed=9)
    used = {d.index for scene in recorded for d in scene.digits}
    assert used and used <= sets["test"]
    labels = images._digits()[1]
    assert all(images.WORDS[labels[d.index]] == d.word for scene in recorded for d in scene.digits)


@pytest.mark.parametrize("name", ["caption", "vqa"])
def test_corrupt_rows_hold_undecodable_images(name):
    table = generate(name, "train", 30, seed=6, corrupt=4)
    bad = table_meta(table)["corrupt_rows"]
    assert len(bad) == 4 and bad == sorted(set(bad))
    for row, png in enumerate(table.column("img").to_pylist()):
        if row in bad:
            with pytest.raises(Exception):
                _decode(png)
        else:
            assert _decode(png).shape == (64, 64, 3)
    assert table_meta(generate(name, "train", 30, seed=7, corrupt=4))["corrupt_rows"] != bad


def test_grounding_corruption_mixes_bad_images_and_out_of_range_boxes():
    table = generate("grounding", "train", 30, seed=6, corrupt=4)
    meta = table_meta(table)
    assert len(meta["corrupt_image_rows"]) == 2 and len(meta["corrupt_box_rows"]) == 2
    for row, rec in enumerate(table.to_pylist()):
        x0, y0, x1, y1 = map(int, rec["region"].split(","))
        out_of_range = x1 > 64 or y1 > 64
        assert out_of_range == (row in meta["corrupt_box_rows"])
        if row in meta["corrupt_image_rows"]:
            with pytest.raises(Exception):
                _decode(rec["img"])
        else:
            _decode(rec["img"])


def test_infill_windows_are_real_text_in_a_small_vocabulary():
    table = generate("infill", "train", 200, seed=1, corrupt=3)
    vocab = set(text.vocabulary())
    assert len(vocab) == text.VOCAB_SIZE
    bad = set(table_meta(table)["corrupt_rows"])
    joined = {s: [" " + " ".join(r) + " " for r in text.runs(s)] for s in text.SPLITS}
    for row, t in enumerate(table.column("text").to_pylist()):
        if row in bad:
            assert t is None
            continue
        words = t.split()
        assert 6 <= len(words) <= 10 and set(words) <= vocab
        assert any(f" {t} " in r for r in joined["train"])  # consecutive words of a train topic
    assert len({t for t in table.column("text").to_pylist() if t}) > 150


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown demo generator"):
        generate("segmentation", "train", 3, seed=0)
    with pytest.raises(ValueError, match="split"):
        generate("caption", "validation", 3, seed=0)
    with pytest.raises(ValueError, match="corrupt"):
        generate("caption", "train", 3, seed=0, corrupt=4)
