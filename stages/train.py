"""Stage `train`: all task manifests -> weighted multitask stream -> DeepSpeed -> checkpoint + MLflow run.

Launch as `python -m stages.train` (one process), or under `torchrun`/`deepspeed` for several; only
rank 0 talks to MLflow.

`checkpoints/ds` persists across `dvc repro` (DVC deletes the stage's other outputs before it runs);
its `run.json` names the configuration fingerprint and the MLflow run the checkpoints belong to.
On every start the stage decides what that earlier state means:
- same configuration and a checkpoint: resume it exactly, and continue the same MLflow run;
- same configuration but no checkpoint (the process died before its first save): train from step 0
  in a new MLflow run, and end the old run FAILED with an `abandoned` tag, because one run holding
  two different values at the same step would misreport both attempts;
- another configuration: move `checkpoints/ds` aside to `checkpoints/previous/<UTC time>-<old
  fingerprint[:12]>` (with its run.json), log where and which params changed, and start fresh in a
  new run. Resuming weights of another configuration would be silently wrong; deleting them would
  lose a run nobody asked to lose.
A stage that raises (Ctrl-C included) ends its MLflow run FAILED and re-raises.

The loss curve `checkpoints/train_curve.csv` is a DVC plot, deleted before every run, so its rows are
also appended to `checkpoints/ds/train_curve.jsonl` as they are logged: a resumed run's CSV starts
from the rows its earlier process logged up to the checkpoint, and holds the whole history.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from stages import cli

log = logging.getLogger("train")

CHECKPOINTS = Path("checkpoints")
VOCAB = Path("assets/vocab.json")
PREVIOUS = "previous"
"""Subdirectory of CHECKPOINTS where checkpoints of an earlier configuration are set aside."""
CURVE_KEPT = "train_curve.jsonl"
"""The curve's rows inside the persisted `checkpoints/ds` (one JSON object per logged step)."""
PART_NAMES = {"seed": "seed", "model": "model", "train": "train", "weights": "task weights", "data": "data"}
_STEP_TAG = re.compile(r"step(\d+)")


def shards_manifest(task: str) -> Path:
    return Path("data/shards") / task / "manifest.json"


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
    """Step of the checkpoint the trainer will resume (its `latest` file names the tag), or None.

    0 when `latest` names a tag that is not `step<N>` (the trainer still resumes it).
    """
    latest = ds / "latest"
    if not latest.is_file():
        return None
    match = _STEP_TAG.fullmatch(latest.read_text().strip())
    return int(match.group(1)) if match else 0


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def set_aside(ds: Path, old_fingerprint: str | None, now: datetime | None = None) -> Path:
    """Move `ds` to `checkpoints/previous/<UTC time>-<old fingerprint[:12]>` (a rename: nothing is
    copied, nothing is lost) and return where it went."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{(old_fingerprint or 'unknown')[:12]}"
    root = CHECKPOINTS / PREVIOUS
    root.mkdir(parents=True, exist_ok=True)
    dest, n = root / name, 1
    while dest.exists():
        dest, n = root / f"{name}-{n}", n + 1
    ds.rename(dest)
    return dest


def prepare_checkpoint_dir(fingerprint: str, parts: Mapping[str, str] | None = None,
                           now: datetime | None = None) -> Prior:
    """Keep `checkpoints/ds` if it belongs to this configuration, else set it aside (module docstring)."""
    ds = CHECKPOINTS / "ds"
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
    kept = set_aside(ds, old.get("fingerprint"), now)
    log.warning("checkpoints/ds was trained with other params (%s changed): moved to %s; training starts "
                "fresh", changed, kept)
    return Prior(run_id, None, f"params changed ({changed}); its checkpoints were moved to {kept}")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


class CurveWriter:
    """The overall and per-task training loss as a CSV (a DVC plot), alongside MLflow.

    Every row is also appended to `kept` (in the persisted checkpoint dir) as it is logged; a run
    resumed at `resume_step` starts from the kept rows up to that step, so the CSV that DVC deleted
    comes back whole. A row for a step replaces any kept row at or after it.
    """

    def __init__(self, path: Path, kept: Path | None = None, resume_step: int | None = None):
        self.path = path
        self.kept = kept
        self.rows: list[dict] = []
        if kept is not None:
            if resume_step is not None:
                self.rows = [r for r in _read_rows(kept) if r["step"] <= resume_step]
            _write_text_atomic(kept, "".join(json.dumps(r) + "\n" for r in self.rows))

    def __call__(self, step: int, metrics: dict) -> None:
        row = {"step": step, "loss": _number(metrics.get("train/loss"))}
        row.update({k.split("/")[-1]: _number(v) for k, v in metrics.items() if k.startswith("train/loss/")})
        if self.rows and self.rows[-1]["step"] >= step:
            self.rows = [r for r in self.rows if r["step"] < step]
            if self.kept is not None:
                _write_text_atomic(self.kept, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.rows.append(row)
        if self.kept is not None:
            with open(self.kept, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        if not self.rows:
            return
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
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


class ProgressLog:
    """One log line at most every `interval` seconds: step, per-task loss, speed and time left.

    The trainer reports every `log_every` steps (to MLflow and the curve); a long run also needs a
    human-readable heartbeat in the terminal `dvc repro` runs in, without flooding it.
    """

    def __init__(self, max_steps: int, interval: float = 30.0):
        self.max_steps, self.interval = max_steps, interval
        self.start = self.last = time.monotonic()
        self.first_step: int | None = None

    def __call__(self, step: int, metrics: dict) -> None:
        now = time.monotonic()
        if self.first_step is None:  # a resumed run starts counting speed here
            self.first_step, self.start = step, now
        if now - self.last < self.interval and step < self.max_steps:
            return
        self.last = now
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        left = f"{(self.max_steps - step) / rate:.0f}" if rate > 0 else "?"
        losses = " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in sorted(metrics.items())
                          if k.startswith("train/loss/"))
        log.info("step %d/%d  %s  %.1f steps/s  ~%s s left", step, self.max_steps, losses, rate, left)


def main(args, params) -> None:
    from ofasys.data.task_data import ShardTaskData
    from ofasys.model import build_model
    from ofasys.training import Trainer
    from ofasys.vocab import UnifiedVocab

    rank = int(os.environ.get("RANK", "0"))
    vocab = UnifiedVocab.load(VOCAB)
    manifests = {name: shards_manifest(name) for name in params.tasks}
    tasks = [ShardTaskData(manifests[name], "train", vocab) for name in params.tasks]
    model_config = params.model_config(vocab.size)
    train_config = params.train_config()
    fingerprint = run_fingerprint(params, manifests)

    CHECKPOINTS.mkdir(exist_ok=True)
    ds = CHECKPOINTS / "ds"
    run_id = log_fn = curve = None
    if rank == 0:
        from pipeline.tracking import write_run_record

        parts = fingerprint_parts(params, manifests)
        prior = prepare_checkpoint_dir(fingerprint, parts)
        run_id, continued = open_run(params, prior)
    try:
        if rank == 0:
            log_fn = describe_run(params, manifests, vocab, prior, run_id, continued)
            ds.mkdir(parents=True, exist_ok=True)
            write_run_record(ds / "run.json", {"fingerprint": fingerprint, "parts": parts, "run_id": run_id})
            if prior.abandoned_because and prior.run_id and prior.run_id != run_id:
                abandon_run(prior.run_id, f"{prior.abandoned_because}; training continues in run {run_id}")
            curve = CurveWriter(CHECKPOINTS / "train_curve.csv", ds / CURVE_KEPT, prior.resume_step)
        progress = ProgressLog(train_config.max_steps)

        def log_both(step: int, metrics: dict) -> None:
            curve(step, metrics)
            progress(step, metrics)
            if log_fn is not None:
                log_fn(step, metrics)

        final = CHECKPOINTS / "final"
        if final.exists() and rank == 0:
            shutil.rmtree(final)
        model = build_model(model_config, train_config.seed)
        trainer = Trainer(
            model,
            tasks,
            {name: t.weight for name, t in params.tasks.items()},
            train_config,
            CHECKPOINTS,
            log_fn=log_both if rank == 0 else None,
            vocab_path=VOCAB,
            model_config=model_config.to_dict(),
            export_dir=final,
        )
        result = trainer.fit()
        if rank != 0:
            return
        curve.flush()
        finish_tracking(params, run_id, result, final)
    except BaseException as err:
        if run_id is not None:
            fail_run(run_id, err)
        raise


def open_run(params, prior: Prior) -> tuple[str, bool]:
    """Start this invocation's MLflow run, or continue the earlier one when its checkpoint is resumed.

    Returns (run id, whether it is the earlier run continued). Everything after this call must end
    the run (see `main`), so it does nothing that can fail once the run is started.
    """
    import mlflow

    from pipeline import tracking

    tracking.setup(params.tracking)
    if prior.resume_step is not None and prior.run_id:
        why_not = tracking.why_not_continuable(prior.run_id, params.tracking.experiment)
        if not why_not:
            mlflow.start_run(run_id=prior.run_id)
            return prior.run_id, True
        log.warning("cannot continue the MLflow run of checkpoints/ds (%s); its checkpoint continues in a "
                    "new run", why_not)
    return mlflow.start_run(run_name="train").info.run_id, False


def describe_run(params, manifests, vocab, prior: Prior, run_id: str, continued: bool):
    """Params and provenance tags of a new run (a continued run has them); returns the metric logger."""
    import mlflow

    from pipeline import tracking
    from pipeline.params import flatten

    if prior.resume_step is not None:
        mlflow.set_tag("resumed_from_step", str(prior.resume_step))
    if continued:
        failure = mlflow.get_run(run_id).data.tags.get("failure")
        if failure is not None:  # the run goes on; the failure becomes its history
            mlflow.set_tag("resumed_after_failure", failure)
            mlflow.delete_tag("failure")
        return tracking.MetricLogger(run_id)
    tracking.log_params(flatten({"seed": params.seed, "model": params.model, "train": params.train,
                                 "tasks": params.tasks, "assets": params.assets}))
    tags = {
        "git_commit": tracking.git_commit(),
        "dvc_lock_sha256": tracking.file_sha256(Path("dvc.lock")),
        "vocab_fingerprint": vocab.fingerprint,
        **tracking.manifest_fingerprints(manifests),
        **{f"instruction/{n}": t.instruction for n, t in params.tasks.items()},
    }
    if prior.run_id and prior.run_id != run_id:
        tags["previous_run"] = prior.run_id
    mlflow.set_tags(tags)
    return tracking.MetricLogger(run_id)


def abandon_run(run_id: str, reason: str) -> None:
    from pipeline import tracking

    if tracking.abandon(run_id, reason):
        log.info("MLflow run %s marked abandoned: %s", run_id, reason)


def fail_run(run_id: str, error: BaseException) -> None:
    """End the run FAILED while `error` propagates; a tracking error here must not hide `error`."""
    from pipeline import tracking

    try:
        tracking.end_failed(run_id, error)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        log.warning("could not mark MLflow run %s FAILED", run_id, exc_info=True)


def finish_tracking(params, run_id, result, final: Path) -> None:
    import mlflow

    from pipeline import tracking

    mlflow.log_metrics({"train/seconds": result.train_seconds, "train/init_seconds": result.init_seconds},
                       step=result.step)
    curve = CHECKPOINTS / "train_curve.csv"
    if curve.exists():
        mlflow.log_artifact(str(curve))
    version = tracking.register_checkpoint(run_id, final, params.tracking.registered_model)
    tracking.write_run_record(CHECKPOINTS / "run.json", {
        "run_id": run_id,
        "registered_model": params.tracking.registered_model,
        "version": version,
        "steps": result.step,
        "train_seconds": round(result.train_seconds, 1),
    })
    mlflow.end_run()  # last: the run is FINISHED only when everything above succeeded
    log.info("trained %d steps in %.0f s; registered %s version %s",
             result.step, result.train_seconds, params.tracking.registered_model, version)


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
