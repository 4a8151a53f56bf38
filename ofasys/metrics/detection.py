"""Object detection metrics: COCO mAP at IoU 0.5 and averaged over IoU 0.5:0.95, by pycocotools.

A detection task (`( [BOX:boxes] [TEXT:labels,closed_set] )*`) outputs, per image, a list of objects:
one dict per object keyed by the repeat group's column names, plus `"score"` when generation gave
one (`[{"boxes": [x0, y0, x1, y1], "labels": "three", "score": 0.93}, ...]`); a reference is the
same without scores. An output may be empty or `None` (nothing detected).

The metrics do not know the column names: an object's box is its first value that is 4 real numbers
(pixels, `x0 <= x1`, `y0 <= y1`, x1/y1 exclusive edges: width = x1 - x0), its label its first text
value (whitespace collapsed), its score its `"score"` (1.0 when missing). See `object_parts`.

AP is computed by pycocotools' `COCOeval` ("bbox", its default parameters: IoU thresholds
.50:.05:.95, 101 recall points, at most 100 detections per image and category; of the area ranges
only "all", see `only_what_is_read`), on datasets built in memory: images 0..N-1, one category per
label of the references and outputs. An image's own score (the registry's `sample_scores`) is the
same AP on that image alone, about a millisecond each.
COCO averages AP over the categories that have reference objects: a category only detected (a label
no reference has) has no AP and is left out of the mean, though a detection with a label that the
references do have is a false positive wherever it does not match. A detection in an image without
reference objects is a false positive, and, as with every false positive, lowers AP only when it is
ranked (by score, over the whole set) above some true positive.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from ofasys.metrics.boxes import mean_box
from ofasys.metrics.common import check_lengths, most_common, normalise

SCORE = "score"
"""The key of an output object's confidence (what generation adds to the group's columns)."""

DECIMALS = 12
"""AP is rounded to this many decimals: COCOeval's precision is tp / (tp + fp + eps), so a perfect
AP comes out as 1 - 2e-16, and a perfect output must score exactly 1.0 (`Metric.perfect`)."""

Parts = tuple[tuple[float, float, float, float], str, float]


def _is_box(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.shape == (4,) and value.dtype.kind in "iuf"
    return (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))


def object_parts(obj: Mapping[str, Any]) -> Parts:
    """`(box, label, score)` of one object: its first value of 4 real numbers (a list, tuple or array),
    as 4 floats; its first text value, whitespace collapsed; its `"score"` (1.0 when missing or None).
    ValueError, naming what is missing, when it is not a dict or has no box, no label, or a box or
    score that is not finite."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"an object must be a dict of its columns' values, got {type(obj).__name__}: {obj!r}")
    box = next((v for k, v in obj.items() if k != SCORE and _is_box(v)), None)
    if box is None:
        raise ValueError(f"an object needs a box (a value of 4 numbers x0, y0, x1, y1); got {obj!r}")
    label = next((v for k, v in obj.items() if k != SCORE and isinstance(v, str)), None)
    if label is None:
        raise ValueError(f"an object needs a label (a text value); got {obj!r}")
    coords = tuple(float(v) for v in box)
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"an object's box must be finite; got {obj!r}")
    score = obj.get(SCORE)
    if score is None:
        score = 1.0
    elif not isinstance(score, numbers.Real) or isinstance(score, bool) or not math.isfinite(score):
        raise ValueError(f"an object's score must be a finite number; got {obj!r}")
    return coords, normalise(label), float(score)  # type: ignore[return-value]


def objects(value: Any) -> list[Parts]:
    """One image's objects (a list of dicts, or None: none) as `object_parts`."""
    if value is None:
        return []
    if isinstance(value, (Mapping, str, bytes)):
        raise ValueError(f"an image's objects must be a list of dicts, got {type(value).__name__}: {value!r}")
    return [object_parts(obj) for obj in value]


def _xywh(box: Sequence[float], reference: bool) -> list[float]:
    """COCO's [x, y, width, height]. An inverted reference box is an error; an inverted output box
    (a decoder may emit x1 < x0) gets zero width or height, so it matches nothing: a false positive."""
    x0, y0, x1, y1 = box
    if reference and not (x0 <= x1 and y0 <= y1):
        raise ValueError(f"a reference box needs x0 <= x1 and y0 <= y1, got {list(box)}")
    return [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]


def coco_ap(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, float]:
    """`(AP@[.5:.95], AP@.5)` of the outputs against the references (each an image's objects), by
    pycocotools' COCOeval (`stats[0]`, `stats[1]`): each the mean over the categories that have
    reference objects. ValueError when no image has a reference object (AP is undefined); 0.0 for both
    when there is no detection at all."""
    check_lengths(outputs, references, "map")
    refs = [objects(r) for r in references]
    outs = [objects(o) for o in outputs]
    if not any(refs):
        raise ValueError("map: no image has a reference object; AP is undefined")
    truths = [(image_id, _xywh(box, reference=True), label) for image_id, image in enumerate(refs)
              for box, label, _ in image]
    if not any(outs):
        return 0.0, 0.0
    labels = sorted({label for image in refs + outs for _, label, _ in image})
    category = {label: i + 1 for i, label in enumerate(labels)}
    # Annotation ids start at 1: COCOeval records a match as the matched id, 0 meaning none.
    annotations = [{"id": n, "image_id": image_id, "category_id": category[label], "bbox": xywh,
                    "area": xywh[2] * xywh[3], "iscrowd": 0}
                   for n, (image_id, xywh, label) in enumerate(truths, start=1)]
    detections = [{"image_id": image_id, "category_id": category[label], "bbox": _xywh(box, reference=False),
                   "score": score}
                  for image_id, image in enumerate(outs) for box, label, score in image]
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        truth = COCO()
        truth.dataset = {"images": [{"id": i} for i in range(len(refs))],
                         "categories": [{"id": i, "name": label} for label, i in category.items()],
                         "annotations": annotations}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        only_what_is_read(evaluation.params)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ap, ap50 = (round(float(evaluation.stats[i]), DECIMALS) for i in (0, 1))
    if not (0.0 <= ap <= 1.0 and 0.0 <= ap50 <= 1.0):  # -1 would mean no category with reference objects
        raise AssertionError(f"COCOeval gave AP {ap}, AP50 {ap50} with reference objects present")
    return ap, ap50


def only_what_is_read(params: Any) -> None:
    """Cut COCOeval's default parameters to the area range "all", the one `stats[0]` and `stats[1]`
    read (the IoU and recall thresholds and detection limits stay the default): the same two figures,
    as each area range is evaluated and accumulated apart, for a quarter of the work (per image as on
    the whole set). The area-range `stats` (small, medium, large) come out -1 and are not read."""
    index = params.areaRngLbl.index("all")
    params.areaRng, params.areaRngLbl = [params.areaRng[index]], ["all"]


def map50(outputs: Sequence[Any], references: Sequence[Any]) -> float:
    """COCO AP at IoU 0.5 (0-1), averaged over the categories with reference objects."""
    return coco_ap(outputs, references)[1]


def mean_ap(outputs: Sequence[Any], references: Sequence[Any]) -> float:
    """COCO AP averaged over IoU 0.5:0.05:0.95 (0-1) and the categories with reference objects."""
    return coco_ap(outputs, references)[0]


def mean_object(train_references: Sequence[Any]) -> dict[str, Any]:
    """The detection baseline's one object: the mean training box (`boxes.mean_box`, over every
    training object whatever its label) with the most common training label (ties to the smallest),
    score 1.0, keyed like the first training object's box and label and `"score"`."""
    found = [(obj, object_parts(obj)) for image in train_references for obj in (image or ())]
    if not found:
        raise ValueError("baseline: no training objects")
    parts = [p for _, p in found]
    first = found[0][0]
    box_key = next(k for k, v in first.items() if k != SCORE and _is_box(v))
    label_key = next(k for k, v in first.items() if k != SCORE and isinstance(v, str))
    return {box_key: list(mean_box([b for b, _, _ in parts])), label_key: most_common(l for _, l, _ in parts),
            SCORE: 1.0}
