"""The train stage's bookkeeping on disk (pipeline.train_state), without training: setting old checkpoints aside and the
loss curve that survives DVC deleting it (the stage end to end is in test_train_runs.py)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline.train_state import CurveWriter, Prior, prepare_checkpoint_dir

PARTS = {"seed": "s", "model": "m", "train": "t", "weights": "w", "data": "d"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture()
def checkpoints(tmp_path) -> Path:
    ds = tmp_path / "checkpoints" / "ds"
    (ds / "step4").mkdir(parents=True)
    (ds / "step4" / "state.pt").write_bytes(b"weights")
    (ds / "latest").write_text("step4")
    (ds / "run.json").write_text(json.dumps({"fingerprint": "a" * 64, "parts": PARTS, "run_id": "r1"}))
    return tmp_path / "checkpoints"


def test_same_configuration_resumes_its_checkpoint_and_run(checkpoints):
    assert prepare_checkpoint_dir(checkpoints, "a" * 64, PARTS) == Prior("r1", 4)


def test_same_configuration_without_a_checkpoint_starts_over_and_abandons_the_run(checkpoints):
    (checkpoints / "ds" / "latest").unlink()
    prior = prepare_checkpoint_dir(checkpoints, "a" * 64, PARTS)
    assert prior.run_id == "r1" and prior.resume_step is None
    assert "before the first checkpoint" in prior.abandoned_because


def test_other_params_move_the_checkpoints_aside_naming_what_changed(checkpoints, caplog):
    new = {**PARTS, "seed": "s2", "weights": "w2"}
    with caplog.at_level(logging.WARNING, logger="train"):
        prior = prepare_checkpoint_dir(checkpoints, "b" * 64, new, now=NOW)
    kept = checkpoints / "previous" / "20260102T030405Z-aaaaaaaaaaaa"
    assert (kept / "step4" / "state.pt").read_bytes() == b"weights"
    assert json.loads((kept / "run.json").read_text())["run_id"] == "r1"
    assert not (checkpoints / "ds").exists()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "(seed, task weights changed)" in line and str(kept) in line
    assert prior.run_id == "r1" and prior.resume_step is None and str(kept) in prior.abandoned_because


def test_a_second_set_aside_in_the_same_second_keeps_both(checkpoints):
    prepare_checkpoint_dir(checkpoints, "b" * 64, PARTS, now=NOW)
    (checkpoints / "ds").mkdir()
    (checkpoints / "ds" / "run.json").write_text(json.dumps({"fingerprint": "a" * 64, "run_id": "r2"}))
    prior = prepare_checkpoint_dir(checkpoints, "b" * 64, PARTS, now=NOW)
    assert sorted(p.name for p in (checkpoints / "previous").iterdir()) == [
        "20260102T030405Z-aaaaaaaaaaaa", "20260102T030405Z-aaaaaaaaaaaa-1"]
    assert "which params is unknown" in prior.abandoned_because  # that record had no per-part hashes


def test_the_curve_comes_back_whole_after_a_resume(tmp_path):
    kept, csv_path = tmp_path / "curve.jsonl", tmp_path / "curve.csv"
    first = CurveWriter(csv_path, kept)
    for step in range(1, 7):
        first(step, {"train/loss": step / 3, "train/loss/a": step / 7})
    with open(kept, "a") as fh:
        fh.write('{"step": 7, "lo')  # the process was killed mid-line
    resumed = CurveWriter(csv_path, kept, resume_step=4)
    for step in range(5, 9):
        resumed(step, {"train/loss": step / 5, "train/loss/a": step / 11})
    resumed.flush()
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "step,loss,a"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    assert [float(r[1]) for r in rows] == [s / 3 for s in range(1, 5)] + [s / 5 for s in range(5, 9)]
    assert [json.loads(line)["step"] for line in kept.read_text().splitlines()] == list(range(1, 9))


def test_a_fresh_start_forgets_the_kept_curve(tmp_path):
    kept = tmp_path / "curve.jsonl"
    kept.write_text('{"step": 1, "loss": 9.0}\n')
    writer = CurveWriter(tmp_path / "curve.csv", kept, resume_step=None)
    assert writer.rows == [] and kept.read_text() == ""


def test_the_signed_record_names_the_resume_step_when_latest_is_missing(checkpoints):
    ds = checkpoints / "ds"
    (ds / "integrity.json").write_text(json.dumps({"tag": "step4"}))
    (ds / "latest").unlink()
    assert prepare_checkpoint_dir(checkpoints, "a" * 64, PARTS) == Prior("r1", 4)
