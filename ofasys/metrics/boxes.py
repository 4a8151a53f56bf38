"""Box metrics: IoU and OFA's grounding accuracy (IoU >= 0.5).

Boxes are `(x0, y0, x1, y1)` with `x0 <= x1`, `y0 <= y1` in continuous coordinates (area = width *
height, no +1), or the same four numbers as an `"x0,y0,x1,y1"` string; a `None` prediction (an
output that did not decode) is a miss.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ofasys.metrics.common import check_lengths

Box = Sequence[float]


def parse_box(box: str | Box) -> tuple[float, float, float, float]:
    """`"x0,y0,x1,y1"` or a 4-sequence -> 4 floats; raises ValueError when malformed or inverted."""
    values = box.split(",") if isinstance(box, str) else list(box)
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers x0,y0,x1,y1, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    if not (x0 <= x1 and y0 <= y1) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"a box needs x0 <= x1 and y0 <= y1 (finite), got {box!r}")
    return x0, y0, x1, y1


def box_iou(a: str | Box, b: str | Box) -> float:
    """Intersection over union of two boxes; 0 when the union has no area."""
    ax0, ay0, ax1, ay1 = parse_box(a)
    bx0, by0, bx1, by1 = parse_box(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def iou_accuracy(pred_boxes: Sequence[str | Box | None], gold_boxes: Sequence[str | Box],
                 threshold: float = 0.5) -> float:
    """Share of predicted boxes with IoU >= `threshold` against the gold box (OFA's grounding acc)."""
    check_lengths(pred_boxes, gold_boxes, "iou_accuracy")
    hits = sum(p is not None and box_iou(p, g) >= threshold for p, g in zip(pred_boxes, gold_boxes))
    return hits / len(pred_boxes)


def mean_box(boxes: Sequence[str | Box]) -> tuple[float, float, float, float]:
    """The coordinate-wise mean box (the grounding baseline's one answer)."""
    if len(boxes) == 0:
        raise ValueError("mean_box: no boxes")
    mean = np.mean(np.array([parse_box(b) for b in boxes], dtype=np.float64), axis=0)
    return tuple(float(v) for v in mean)  # type: ignore[return-value]
