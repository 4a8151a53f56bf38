"""Offline pictures: curve and metric PNGs (same figures, same bytes) and the gallery page."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from pipeline.gallery import Example, gallery_html, picture_of
from pipeline.plots import curves_png, metrics_png, read_curve


def _curves(tmp_path):
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    train.write_text("step,loss,caption,vqa\n25,3.0,2.5,3.5\n50,2.0,1.5,2.5\n75,1.5,,2.0\n")
    valid.write_text("step,loss,caption,vqa\n50,2.2,1.7,2.7\n")
    return train, valid


def test_curves_are_read_per_task_and_drawn_deterministically(tmp_path):
    train, valid = _curves(tmp_path)
    assert read_curve(train)["caption"] == [(25, 2.5), (50, 1.5)]  # an empty cell is no point
    assert read_curve(tmp_path / "missing.csv") == {}
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    curves_png(train, valid, a)
    curves_png(train, valid, b)
    assert a.read_bytes() == b.read_bytes() and Image.open(a).size[0] > 300
    assert not list(tmp_path.glob("*.tmp"))


def test_metric_bars_take_each_task_on_its_own_scale(tmp_path):
    metrics = {
        "caption": {"metric": "bleu4", "bleu4": 89.8, "bleu4_baseline": 0.0, "higher_is_better": True,
                    "degenerate": False},
        "asr": {"metric": "wer", "wer": 0.36, "wer_baseline": 0.92, "higher_is_better": False, "degenerate": True},
        "summary": {"tasks": 2},
    }
    out = tmp_path / "m.png"
    metrics_png(metrics, out)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 100  # the degenerate task's bar is drawn red


def test_gallery_draws_boxes_on_the_picture_and_escapes_text():
    picture = np.zeros((10, 10, 3), np.uint8)
    assert picture_of({"cap.text": np.zeros(3, np.int64), "img.image": picture})[0] == "img"
    ex = Example("test-000000000", "7", {"query": "the <b>seven</b>", "img": "<812 bytes>"},
                 prediction=[0.0, 0.0, 50.0, 50.0], reference=[50.0, 50.0, 100.0, 100.0], score=0.0, right=False,
                 picture=picture, original_size=(100, 100))
    page = gallery_html("grounding", "iou_acc", [ex])
    assert "the &lt;b&gt;seven&lt;/b&gt;" in page and "&lt;812 bytes&gt;" not in page  # the picture shows it
    assert "(id 7)" in page and "iou_acc 0" in page and 'class="card wrong"' in page
    data = re.search(r'data:image/png;base64,([^"]+)', page).group(1)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert img.shape == (30, 30, 3)  # shown 3x
    assert tuple(img[0, 5]) == (230, 0, 0)  # predicted box (top-left quarter) in red
    assert tuple(img[29, 20]) == (0, 200, 0)  # reference box (bottom-right quarter) in green
    text_only = gallery_html("asr", "wer", [Example("k", "1", {"wav": "a.flac"}, "a b", "a b", 0.0, right=True)])
    assert "<img" not in text_only and "a.flac" in text_only and 'class="card right"' in text_only


def test_an_image_output_is_shown_as_its_decoded_pictures_not_its_codes():
    from stages.evaluate import decoded_pictures

    decode = lambda codes: np.repeat(np.repeat(codes[..., None] * 60, 4, 1), 4, 2).repeat(3, -1).astype(np.uint8)  # noqa: E731
    pictures = decoded_pictures([0, 1, 2, 3], [3, 2, 1, 0], decode)
    assert set(pictures) == {"prediction", "reference"} and pictures["prediction"].shape == (8, 8, 3)
    assert set(decoded_pictures([0, 1], [3, 2, 1, 0], decode)) == {"reference"}  # a grid cut short is left out
    assert decoded_pictures("a caption", "a caption", decode) == {}
    ex = Example("k", "1", {"cap": "a three"}, [0, 1, 2, 3], [3, 2, 1, 0], 0.25, output_pictures=pictures)
    page = gallery_html("text_to_image", "code_accuracy", [ex])
    shown = re.findall(r'data:image/png;base64,([^"]+)" alt="(prediction|reference)"', page)
    assert [which for _, which in shown] == ["prediction", "reference"] and "[0, 1, 2, 3]" not in page
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown[0][0]))).convert("RGB"))
    assert img.shape == (96, 96, 3) and img[0, 0, 0] == 0 and img[0, 95, 0] == 60  # code 0 left, code 1 right


def test_a_detection_draws_every_object_and_lists_labels_with_scores():
    picture = np.zeros((10, 10, 3), np.uint8)
    prediction = [{"boxes": [0.0, 0.0, 50.0, 50.0], "labels": "one", "score": 0.9}]
    reference = [{"boxes": [0.0, 0.0, 50.0, 50.0], "labels": "one"}, {"boxes": [50.0, 50.0, 100.0, 100.0], "labels": "two"}]
    ex = Example("k", "1", {}, prediction, reference, 0.5, picture=picture, original_size=(100, 100))
    page = gallery_html("detection", "map50", [ex])
    assert "one (0.90)" in page and "one, two" in page
    data = re.search(r'data:image/png;base64,([^"]+)', page).group(1)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert tuple(img[0, 5]) == (230, 0, 0)  # the predicted object, drawn over the reference's first
    assert tuple(img[29, 20]) == (0, 200, 0)  # the missed second object, in green
    assert "(no objects)" in gallery_html("detection", "map50", [Example("k", "1", {}, [], reference, 0.0)])
