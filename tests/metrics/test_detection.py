"""Detection metrics (COCO mAP by pycocotools) on hand-checkable cases, alone and through the registry.

COCO's AP is the mean, over 101 recall points r = 0, .01, ..., 1, of the best precision at a recall
>= r (0 past the highest recall reached), then over the labels that have reference objects; `map`
also averages over the IoU thresholds .50, .55, ..., .95 (a match needs IoU >= the threshold).
"""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import pytest

from ofasys.metrics import detection as det
from ofasys.metrics import registry as r

A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]


def obj(box, label, score=None):
    out = {"boxes": box, "labels": label}
    return out if score is None else {**out, "score": score}


def data(refs, train=()):
    return r.EvalData(references=refs, train_references=train)


def both(outputs, references):
    return r.score("map50", outputs, data(references)), r.score("map", outputs, data(references))


# --- object_parts ----------------------------------------------------------------------------------

def test_object_parts_finds_box_label_and_score_by_type_whatever_the_column_names():
    assert det.object_parts({"labels": " three  dogs ", "boxes": [1, 2, 3, 4], "score": 0.5}) == \
        ((1.0, 2.0, 3.0, 4.0), "three dogs", 0.5)
    assert det.object_parts({"what": "one", "where": (0, 0, 1.5, 2)}) == ((0.0, 0.0, 1.5, 2.0), "one", 1.0)
    assert det.object_parts({"b": np.array([0.0, 1, 2, 3]), "l": "x", "score": None})[1:] == ("x", 1.0)
    # the first box and the first label win
    assert det.object_parts({"n": 3, "a": [9, 9, 9, 9], "b": [1, 1, 1, 1], "l": "x", "m": "y"})[:2] == \
        ((9.0, 9.0, 9.0, 9.0), "x")


def test_object_parts_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="needs a box"):
        det.object_parts({"boxes": "0,0,1,1", "labels": "one"})  # text is a label, not a box
    with pytest.raises(ValueError, match="needs a box"):
        det.object_parts({"boxes": [0, 0, 1], "labels": "one"})
    with pytest.raises(ValueError, match="needs a box"):
        det.object_parts({"boxes": [True, False, True, True], "labels": "one"})
    with pytest.raises(ValueError, match="needs a label"):
        det.object_parts({"boxes": [0, 0, 1, 1], "labels": None})
    with pytest.raises(ValueError, match="must be a dict"):
        det.object_parts([0, 0, 1, 1])
    with pytest.raises(ValueError, match="box must be finite"):
        det.object_parts({"boxes": [0, 0, float("nan"), 1], "labels": "one"})
    with pytest.raises(ValueError, match="score must be a finite number"):
        det.object_parts({"boxes": [0, 0, 1, 1], "labels": "one", "score": "high"})
    with pytest.raises(ValueError, match="must be a list of dicts"):
        det.objects({"boxes": [0, 0, 1, 1], "labels": "one"})


# --- mAP -------------------------------------------------------------------------------------------

def test_perfect_detections_score_exactly_one():
    refs = [[obj(A, "one"), obj(B, "two")], [obj(C, "one")]]
    outs = [[obj(A, "one", 0.9), obj(B, "two", 0.4)], [obj(C, "one", 0.7)]]
    assert both(outs, refs) == (1.0, 1.0)
    assert both(refs, refs) == (1.0, 1.0)  # no score: 1.0


def test_a_loose_box_counts_at_iou_05_but_not_at_the_strict_thresholds():
    refs = [[obj(A, "one")]]
    # IoU 0.625 matches at .50, .55, .60: 3 of the 10 thresholds
    assert both([[obj([0, 0, 10, 6.25], "one")]], refs) == (1.0, 0.3)
    assert both([[obj([0, 0, 10, 6], "one")]], refs) == (1.0, 0.3)  # IoU 0.6 exactly: the threshold is inclusive
    assert both([[obj([0, 0, 10, 4], "one")]], refs) == (0.0, 0.0)  # IoU 0.4


def test_the_right_box_with_a_wrong_label_scores_zero_for_its_category():
    assert both([[obj(A, "two")]], [[obj(A, "one")]]) == (0.0, 0.0)
    refs = [[obj(A, "one"), obj(B, "two")]]
    # "one" finds A (AP 1) and, below it, calls B "one" (a false positive after its recall is 1, so
    # still AP 1); "two" finds nothing (AP 0): the mean over the two labels is 0.5
    assert both([[obj(A, "one", 0.9), obj(B, "one", 0.8)]], refs) == (0.5, 0.5)
    # the mislabelled B ranked first halves "one"'s precision everywhere: (0.5 + 0) / 2
    assert both([[obj(A, "one", 0.8), obj(B, "one", 0.9)]], refs) == (0.25, 0.25)


def test_a_lower_scored_duplicate_does_not_lower_ap():
    # COCOeval: the duplicate is a false positive ranked after the true positive; precision falls to 1/2
    # only once recall is 1, and the interpolated precision (the best at any higher recall) stays 1
    refs = [[obj(A, "one")]]
    assert both([[obj(A, "one", 0.9), obj(A, "one", 0.5)]], refs) == (1.0, 1.0)
    assert both([[obj(A, "one", 0.9), obj(A, "one", 0.9)]], refs) == (1.0, 1.0)  # a tie: the first listed matches


def test_score_ranking_matters():
    refs = [[obj(A, "one")]]
    assert both([[obj(A, "one", 0.9), obj(B, "one", 0.3)]], refs) == (1.0, 1.0)
    assert both([[obj(A, "one", 0.3), obj(B, "one", 0.9)]], refs) == (0.5, 0.5)  # precision 1/2 at recall 1
    # two references, a false positive between the two hits: precision 1 up to recall 1/2 (51 of the
    # 101 recall points), 2/3 above it (50 points)
    refs = [[obj(A, "one"), obj(C, "one")]]
    outs = [[obj(A, "one", 0.9), obj(B, "one", 0.8), obj(C, "one", 0.7)]]
    assert r.score("map50", outs, data(refs)) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_empty_or_missing_outputs_score_zero():
    refs = [[obj(A, "one")], [obj(B, "two")]]
    assert both([[], None], refs) == (0.0, 0.0)
    assert both([[obj(A, "one")], []], refs) == (0.5, 0.5)  # "two" has no detection: AP 0


def test_a_false_positive_on_an_image_without_objects_lowers_ap_when_ranked_above_a_hit():
    refs = [[obj(A, "one")], []]
    assert both([[obj(A, "one", 0.5)], []], refs) == (1.0, 1.0)
    assert both([[obj(A, "one", 0.5)], [obj(A, "one", 0.9)]], refs) == (0.5, 0.5)
    assert both([[obj(A, "one", 0.5)], [obj(A, "one", 0.1)]], refs) == (1.0, 1.0)


def test_ap_is_the_mean_over_the_labels_with_reference_objects():
    refs = [[obj(A, "one"), obj(B, "two")]]
    # "seven" is in no reference: COCOeval gives it AP -1 and leaves it out of the mean (were it counted
    # as 0 the mean would be 2/3, as -1 it would be 1/3)
    outs = [[obj(A, "one", 0.5), obj(B, "two", 0.5), obj(C, "seven", 0.99)]]
    assert both(outs, refs) == (1.0, 1.0)
    assert both([[obj(C, "seven")]], refs) == (0.0, 0.0)


def test_undefined_without_reference_objects_and_misaligned_inputs():
    with pytest.raises(ValueError, match="no image has a reference object; AP is undefined"):
        r.score("map50", [[obj(A, "one")], None], data([[], None]))
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        r.score("map", [[], []], data([[obj(A, "one")]]))
    with pytest.raises(ValueError, match="reference box needs x0 <= x1"):
        r.score("map", [[]], data([[obj([10, 0, 0, 10], "one")]]))


def test_an_inverted_output_box_is_a_false_positive():
    refs = [[obj(A, "one")]]
    assert both([[obj([10, 10, 0, 0], "one")]], refs) == (0.0, 0.0)
    assert both([[obj(A, "one", 0.5), obj([10, 10, 0, 0], "one", 0.9)]], refs) == (0.5, 0.5)


def _default_cocoeval(outputs, references):
    """(stats[0], stats[1]) of COCOeval with all its default parameters, built from `object_parts`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    refs, outs = [det.objects(x) for x in references], [det.objects(x) for x in outputs]
    labels = sorted({label for image in refs + outs for _, label, _ in image})
    cat = {label: i + 1 for i, label in enumerate(labels)}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    anns = [{"image_id": i, "category_id": cat[label], "bbox": xywh(box), "area": xywh(box)[2] * xywh(box)[3],
             "iscrowd": 0} for i, image in enumerate(refs) for box, label, _ in image]
    for n, ann in enumerate(anns):
        ann["id"] = n + 1
    dets = [{"image_id": i, "category_id": cat[label], "bbox": xywh(box), "score": score}
            for i, image in enumerate(outs) for box, label, score in image]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(refs))],
                      "categories": [{"id": i} for i in cat.values()], "annotations": anns}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats[0], ev.stats[1]


def test_same_figures_as_cocoeval_with_all_its_default_parameters():
    rng = random.Random(7)
    refs, outs = [], []
    for _ in range(40):
        image = []
        for _ in range(rng.randint(0, 4)):
            x, y, size = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(5, 120)  # small to large areas
            image.append(obj([x, y, x + size, y + size], rng.choice(["one", "two", "three"])))
        refs.append(image)
        found = [obj([v + rng.uniform(-4, 4) for v in o["boxes"]], o["labels"], rng.random())
                 for o in image if rng.random() < 0.8]
        found += [obj([10, 10, 40, 40], rng.choice(["one", "four"]), rng.random()) for _ in range(rng.randint(0, 1))]
        outs.append(found)
    ap, ap50 = det.coco_ap(outs, refs)
    assert 0 < ap < ap50 < 1
    assert (ap, ap50) == pytest.approx(_default_cocoeval(outs, refs), abs=1e-12)


# --- registry: baseline, report, per-sample scores, spread --------------------------------------------

TRAIN = [[obj([0, 0, 10, 10], "one"), obj([10, 10, 20, 20], "two")], [obj([20, 20, 30, 30], "one")], [], None]
MEAN = [10.0, 10.0, 20.0, 20.0]


def test_baseline_is_one_mean_box_with_the_majority_label_on_every_image():
    assert r.metric("map50").baseline(data([[], [obj(A, "two")]], TRAIN)) == \
        [[{"boxes": MEAN, "labels": "one", "score": 1.0}]] * 2
    # keyed like the training objects, scored like a model's output
    assert r.metric("map").baseline(data([[]], [[{"where": A, "what": "one"}]])) == \
        [[{"where": [0.0, 0.0, 10.0, 10.0], "what": "one", "score": 1.0}]]
    refs = [[obj(MEAN, "one"), obj(C, "two")]]  # finds the "one", misses the "two"
    assert r.baseline("map50", data(refs, TRAIN)) == r.baseline("map", data(refs, TRAIN)) == 0.5
    with pytest.raises(ValueError, match="no training objects"):
        r.baseline("map50", data(refs, [[], None]))


def test_report_holds_map50_map_and_their_baselines():
    refs = [[obj(MEAN, "one"), obj(C, "two")], [obj([0, 0, 10, 6.25], "two")]]
    outs = [[obj(MEAN, "one", 0.9), obj(C, "two", 0.8)], [obj(A, "two", 0.7)]]
    rep = r.report("map50", outs, data(refs, TRAIN))
    # "two" at IoU 0.625 on image 1: at .50-.60 both "two"s are hits (AP 1); at the 7 stricter thresholds
    # the first is a hit, the second a false positive (recall 1/2: 51 of 101 recall points)
    two = (3 + 7 * 51 / 101) / 10
    assert rep["metric"] == "map50" and rep["map50"] == 1.0 and rep["map"] == pytest.approx((1 + two) / 2)
    assert rep["map50_baseline"] == rep["map_baseline"] == 0.5  # "one" found on image 0; "two" never
    assert rep["gain"] == 0.5 and rep["higher_is_better"] is True and rep["num_samples"] == 2
    assert rep["degenerate"] is False and rep["top_output_share"] == 0.5


def test_sample_scores_are_each_images_own_ap_and_none_without_reference_objects():
    refs = [[obj(A, "one")], [obj(A, "one")], [], [], [obj(A, "one"), obj(B, "two")]]
    outs = [[obj(A, "one")], None, [obj(A, "one")], [], [obj(A, "one")]]
    assert r.sample_scores("map50", outs, data(refs)) == [1.0, 0.0, None, None, 0.5]
    assert r.sample_scores("map", [[obj([0, 0, 10, 6.25], "one")]], data([[obj(A, "one")]])) == [0.3]


def test_output_spread_compares_lists_of_objects_by_value():
    refs = [[obj(A, "one")], [obj(B, "two")], [], [obj(C, "one")]]
    spread = r.output_spread([[obj(MEAN, "one", 1.0)]] * 3 + [[]], refs)
    assert spread == {"top_output_share": 0.75, "top_reference_share": 0.25, "degenerate": True}
    assert not r.output_spread([[obj(A, "one", 0.5)], [obj(A, "one", 0.6)], None, []], refs)["degenerate"]
