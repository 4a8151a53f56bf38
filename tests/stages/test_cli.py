"""Stage CLIs: a user error exits 2 with one clear message (no traceback) and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _stage(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, "--params", str(tmp_path / "params.yaml"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def _params(tmp_path: Path, **task_overrides) -> None:
    raw = yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())
    raw["tasks"]["grounding"].update(task_overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))


def test_malformed_instruction_stops_the_first_stage_before_any_work(tmp_path):
    _params(tmp_path, instruction="[IMAGE:img] where is it? -> [BOX:region,preprocessor=x]")
    proc = _stage(tmp_path, "stages.ingest", "--task", "caption")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "tasks.grounding.instruction: unknown attribute 'preprocessor'" in proc.stderr
    assert "did you mean preprocess=" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_unknown_task_is_a_usage_error(tmp_path):
    _params(tmp_path)
    proc = _stage(tmp_path, "stages.ingest", "--task", "captoin")
    assert proc.returncode == 2
    assert "--task 'captoin' is not in params tasks" in proc.stderr


def test_ingest_writes_the_three_splits(tmp_path):
    _params(tmp_path)
    proc = _stage(tmp_path, "stages.ingest", "--task", "vqa")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "data/raw/vqa").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
