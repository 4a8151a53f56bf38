import json
import logging
from pathlib import Path

import pytest

from stages.train import ProgressLog


def test_progress_reports_step_losses_and_time_left(caplog):
    progress = ProgressLog(max_steps=100, interval=0.0)
    with caplog.at_level(logging.INFO, logger="train"):
        progress(10, {"train/loss": 2.0, "train/loss/caption": 1.5})  # speed is measured from here
        progress(20, {"train/loss": 1.0, "train/loss/caption": 1.25, "train/loss/vqa": 0.25})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("step 20/100  caption=1.250 vqa=0.250") and "s left" in lines[0]
    assert "0.0 steps/s" not in lines[0]


def test_progress_is_throttled_but_always_reports_the_last_step(caplog):
    progress = ProgressLog(max_steps=30, interval=3600.0)
    with caplog.at_level(logging.INFO, logger="train"):
        for step in (10, 20, 30):
            progress(step, {"train/loss/caption": 1.0})
    assert [r.getMessage().split()[1] for r in caplog.records] == ["30/30"]


def _manifest(tmp_path, name: str, valid: int) -> Path:
    path = tmp_path / name / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"splits": {"train": {"num_samples": 10}, "valid": {"num_samples": valid}}}))
    return path


def test_validation_without_any_valid_rows_is_refused_before_training(tmp_path):
    from stages.cli import ParamsError
    from stages.train import check_valid_rows

    manifests = {"a": _manifest(tmp_path, "a", 0), "b": _manifest(tmp_path, "b", 0)}
    with pytest.raises(ParamsError, match=r"^train.valid_every: 50, but no task has valid rows \(a, b all"):
        check_valid_rows(50, manifests)
    check_valid_rows(0, manifests)  # validation off: nothing to check
    check_valid_rows(50, {**manifests, "c": _manifest(tmp_path, "c", 3)})  # one task with rows is enough
