"""Box IoU and grounding accuracy against hand-computed values."""

from __future__ import annotations

import pytest

from ofasys import metrics as m


def test_box_iou_hand_values():
    assert m.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert m.box_iou("0,0,2,2", (0, 0, 2, 2)) == 1.0
    assert m.box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert m.box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="x0 <= x1"):
        m.box_iou([2, 0, 1, 1], [0, 0, 1, 1])


def test_iou_accuracy_threshold_is_inclusive_and_none_misses():
    gold = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    preds = [[0, 0, 2, 1], [0, 0, 3, 1], None]  # IoU 0.5, 1/3, no prediction
    assert m.iou_accuracy(preds, gold) == pytest.approx(1 / 3)
    assert m.iou_accuracy(preds, gold, threshold=0.3) == pytest.approx(2 / 3)


def test_mean_box():
    assert m.mean_box(["0,0,10,10", [10, 10, 20, 20]]) == (5.0, 5.0, 15.0, 15.0)
    with pytest.raises(ValueError, match="no boxes"):
        m.mean_box([])
