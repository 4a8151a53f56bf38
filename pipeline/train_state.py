"""What the train stage keeps across invocations in `checkpoints/ds`, and what it makes of it.

`checkpoints/ds` persists across `dvc repro` (DVC deletes the stage's other outputs before it runs);
its `run.json` names the configuration fingerprint and the MLflow run the checkpoints belong to.
On every start the stage decides what that earlier state means (`prepare_checkpoint_dir`):
- same configuration and a checkpoint: resume it exactly, and continue the same MLflow run;
- same configuration but no checkpoint (the process died before its first save): train from step 0
  in a new MLflow run, and end the old run FAILED with an `abandoned` tag, because one run holding
  two different values at the same step would misreport both attempts;
- another configuration: move `checkpoints/ds` aside to `checkpoints/previous/<UTC time>-<old
  fingerprint[:12]>` (with its run.json), log where and which params changed, and start fresh in a
  new run. Resuming weights of another configuration would be silently wrong; deleting them would
  lose a run nobody asked to lose.

The loss curve `plots/train_curve.csv` is a DVC output, deleted before every run, so its rows are
also appended to `checkpoints/ds/train_curve.jsonl` as they are logged (`CurveWriter`): a resumed
run's CSV starts from the rows its earlier process logged up to the checkpoint, and holds the whole
history.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("train")

CHECKPOINTS = Path("checkpoints")
"""The train stage's output root (relative to the project dir, where stages run)."""
PREVIOUS = "previous"
"""Subdirectory of CHECKPOINTS where checkpoints of an earlier configuration are set aside."""
CURVE_KEPT = "train_curve.jsonl"
"""The curve's rows inside the persisted `checkpoints/ds` (one JSON object per logged step)."""
VALID_CURVE_KEPT = "valid_curve.jsonl"
"""The same for the validation curve."""
PART_NAMES = {"seed": "seed", "model": "model", "train": "train", "weights": "task weights", "data": "data"}
_STEP_TAG = re.compile(r"step(\d+)")
def _fingerprint_blob(params, manifests: Mapping[str, Path]) -> dict[str, Any]:
    return {
        "seed": params.seed,
        "model": params.model,
        "train": params.train,
        "weights": {n: t.weight for n, t in params.tasks.items()},
        "data": {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in sorted(manifests.items())},
    }


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_fingerprint(params, manifests: Mapping[str, Path]) -> str:
    """What a resumable checkpoint must match: model/train params, mixture, seed, and the data."""
    return _sha256_json(_fingerprint_blob(params, manifests))


def fingerprint_parts(params, manifests: Mapping[str, Path]) -> dict[str, str]:
    """The fingerprint's parts hashed one by one, so a mismatch can say which params changed."""
    return {k: _sha256_json(v) for k, v in _fingerprint_blob(params, manifests).items()}


def changed_parts(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> str:
    """Which parts differ, for humans: e.g. `train, seed`."""
    if not old or not new:
        return "which params is unknown: the old checkpoints/ds/run.json has no per-part fingerprints"
    names = [label for key, label in PART_NAMES.items() if old.get(key) != new.get(key)]
    return ", ".join(names) if names else "the fingerprint's definition"


@dataclass(frozen=True)
class Prior:
    """What an earlier invocation left in `checkpoints/ds`, and what this one does about it."""

    run_id: str | None = None
    """MLflow run of the earlier invocation (from checkpoints/ds/run.json), if any."""
    resume_step: int | None = None
    """Step of the checkpoint training continues from; None = training starts at step 0."""
    abandoned_because: str = ""
    """Why the earlier run will never be continued ('' when it is continued, or there was none)."""


def latest_checkpoint_step(ds: Path) -> int | None:
    """Step of the checkpoint the trainer will resume, or None when there is none.

    The trainer resumes the tag its signed record (`integrity.json`) names, `latest` being only a
    mirror of it (absent when a process was killed between the two writes); the trainer verifies
    the record before loading anything. 0 when the tag is not `step<N>` (the trainer still resumes it).
    """
    from ofasys.training.checkpoint_integrity import INTEGRITY_FILE, LATEST_FILE

    tag = _read_record(ds / INTEGRITY_FILE).get("tag")
    if not isinstance(tag, str):
        latest = ds / LATEST_FILE
        if not latest.is_file():
            return None
        tag = latest.read_text().strip()
    match = _STEP_TAG.fullmatch(tag)
    return int(match.group(1)) if match else 0


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def set_aside(root: Path, old_fingerprint: str | None, now: datetime | None = None) -> Path:
    """Move `root/ds` to `root/previous/<UTC time>-<old fingerprint[:12]>` (a rename: nothing is
    copied, nothing is lost) and return where it went."""
    ds = root / "ds"
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{(old_fingerprint or 'unknown')[:12]}"
    previous = root / PREVIOUS
    previous.mkdir(parents=True, exist_ok=True)
    dest, n = previous / name, 1
    while dest.exists():
        dest, n = previous / f"{name}-{n}", n + 1
    ds.rename(dest)
    return dest


def prepare_checkpoint_dir(root: Path, fingerprint: str, parts: Mapping[str, str] | None = None,
                           now: datetime | None = None) -> Prior:
    """Keep `root/ds` if it belongs to this configuration, else set it aside (module docstring)."""
    ds = root / "ds"
    if not ds.exists():
        return Prior()
    old = _read_record(ds / "run.json")
    run_id = old.get("run_id")
    if old.get("fingerprint") == fingerprint:
        step = latest_checkpoint_step(ds)
        if step is not None:
            log.info("resuming checkpoints/ds at step %d (same configuration)", step)
            return Prior(run_id, step)
        log.warning("checkpoints/ds has no checkpoint (its process stopped before the first save): "
                    "training starts from step 0 in a new MLflow run")
        return Prior(run_id, None, "its process stopped before the first checkpoint, so training restarted "
                                   "from step 0")
    if not any(ds.iterdir()):
        ds.rmdir()
        return Prior()
    changed = changed_parts(old.get("parts"), parts)
    kept = set_aside(root, old.get("fingerprint"), now)
    log.warning("checkpoints/ds was trained with other params (%s changed): moved to %s; training starts "
                "fresh", changed, kept)
    return Prior(run_id, None, f"params changed ({changed}); its checkpoints were moved to {kept}")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


class CurveWriter:
    """The overall and per-task training (or validation) loss as a CSV (a DVC plot), alongside MLflow.

    Every row is also appended to `kept` (in the persisted checkpoint dir) as it is logged; a run
    resumed at `resume_step` starts from the kept rows up to that step, so the CSV that DVC deleted
    comes back whole. A row for a step replaces any kept row at or after it.
    """

    def __init__(self, path: Path, kept: Path | None = None, resume_step: int | None = None,
                 prefix: str = "train/loss"):
        self.path = path
        self.kept = kept
        self.prefix = prefix
        """Which curve: `train/loss` or `valid/loss` (the overall key; per task `<prefix>/<task>`)."""
        self.rows: list[dict] = []
        if kept is not None:
            if resume_step is not None:
                self.rows = [r for r in _read_rows(kept) if r["step"] <= resume_step]
            _write_text_atomic(kept, "".join(json.dumps(r) + "\n" for r in self.rows))

    def __call__(self, step: int, metrics: dict) -> None:
        if self.prefix not in metrics:
            return  # another curve's figures
        row = {"step": step, "loss": _number(metrics.get(self.prefix))}
        row.update({k.split("/")[-1]: _number(v) for k, v in metrics.items() if k.startswith(self.prefix + "/")})
        if self.rows and self.rows[-1]["step"] >= step:
            self.rows = [r for r in self.rows if r["step"] < step]
            if self.kept is not None:
                _write_text_atomic(self.kept, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.rows.append(row)
        if self.kept is not None:
            with open(self.kept, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        """Write the CSV (a header only when nothing was logged: DVC expects the declared file)."""
        fields = list(dict.fromkeys(k for r in self.rows for k in r)) or ["step", "loss"]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)


def _read_rows(path: Path) -> list[dict]:
    """Rows of a kept curve; a line cut short by a killed process is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
