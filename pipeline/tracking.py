"""MLflow tracking and registry: the only module that talks to MLflow.

Runs are named per stage, params are flattened `a.b.c` keys, metrics follow `train/loss/<task>` and
`eval/<metric>/<task>`, and tags pin the code (git commit), the data (dvc.lock hash, manifest
fingerprints) and the vocabulary. The default store is `sqlite:///mlflow.db` with local artifacts, so
`mlflow ui` works with no server to run.

A run's status tells the truth: a stage that raises (Ctrl-C included) ends its run FAILED with a
`failure` tag, and a run that will never be continued (its process died before a checkpoint, or
its params changed) is ended FAILED with an `abandoned` tag saying why and which run replaced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.params import TrackingParams, to_plain

CHAMPION = "champion"
"""Registry alias that `evaluate` moves to a version only by the rule of `pipeline.selection`."""


def git_commit(repo: Path = Path(".")) -> str:
    """Current commit hash, suffixed with `-dirty` when the work tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def file_sha256(path: Path) -> str:
    if not path.exists():
        return "absent"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_uri(uri: str, project_dir: Path) -> str:
    """`uri` with a relative sqlite path made absolute against `project_dir`.

    MLflow resolves `sqlite:///mlflow.db` against whatever the working directory is when it opens
    the store, and caches stores by URI string; params mean the project's store, so it is pinned here.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    rest = uri[len(prefix):]
    path, sep, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith("/"):
        return uri
    return f"{prefix}{(Path(project_dir) / path).resolve()}{sep}{query}"


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""MLflow 3's UI opens an experiment without this tag on its GenAI traces page; with it, on the
training runs and their charts, which is what `mlflow ui` is for here."""


def project_root() -> Path:
    """The directory a relative store path in params is relative to: the DVC project's root. DVC
    passes it to every stage as DVC_ROOT, and `dvc exp run --temp` or a queued experiment passes the
    *original* project's root, so their runs land in the same store as the others instead of a copy
    deleted with the temporary directory. Outside DVC: the working directory."""
    return Path(os.environ.get("DVC_ROOT") or ".")


def setup(tracking: TrackingParams, project_dir: Path | None = None) -> None:
    """Point MLflow at the configured store and experiment (created on first use).

    A relative sqlite path in params is relative to `project_dir` (default `project_root()`).
    """
    uri = store_uri(tracking.uri, project_root() if project_dir is None else project_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        mlflow.create_experiment(tracking.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    elif EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(tracking.experiment)


DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
"""Set by `dvc exp run` for the stage commands it runs: the DVC experiment's name (e.g. exp-bfe64)."""


def dvc_experiment() -> str | None:
    """The DVC experiment this stage runs in (`dvc exp run`), or None under plain `dvc repro`."""
    return os.environ.get(DVC_EXPERIMENT_ENV) or None


def run_name(stage: str, tracking: TrackingParams) -> str:
    """`<stage> · <MLflow experiment>[ · <DVC experiment>][ · <run label>]`: what a row of `mlflow ui`'s comparison
    says, so runs of different stages and experiments are told apart without opening them."""
    return " · ".join(p for p in (stage, tracking.experiment, dvc_experiment(), tracking.run_label) if p)


def params_hash(params: Any) -> str:
    """sha256 of the validated params (defaults filled in, keys sorted): equal hashes, equal runs."""
    text = json.dumps(to_plain(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def experiment_tags(params: Any) -> dict[str, str]:
    """Tags that place a run among experiments: the DVC experiment (or `workspace` under plain
    `dvc repro`), the baseline commit `dvc exp run` started from, and the params hash."""
    tags = {"dvc_experiment": dvc_experiment() or "workspace", "params_hash": params_hash(params)}
    if params.tracking.run_label:
        tags["run_label"] = params.tracking.run_label
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        tags["dvc_baseline_rev"] = baseline
    return tags


def log_params(flat: Mapping[str, Any]) -> None:
    """Log flattened params; MLflow caps values at 6000 chars and a batch at 100 entries."""
    items = [(k, str(v)[:6000]) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


@dataclass
class MetricLogger:
    """A `log_fn(step, metrics)` for the trainer: forwards to the active MLflow run."""

    run_id: str

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        MlflowClient().log_batch(
            self.run_id,
            metrics=[
                mlflow.entities.Metric(key=k, value=v, timestamp=_now_ms(), step=step)
                for k, v in sorted(clean.items())
            ],
        )


FAILED = "FAILED"
FINISHED = "FINISHED"


def run_status(run_id: str) -> str | None:
    """The run's status (`RUNNING`, `FINISHED`, `FAILED`, ...), or None when the store has no live
    run with that id (never created there, or deleted)."""
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else run.info.status


def why_not_continuable(run_id: str, experiment: str) -> str:
    """Why `run_id` cannot be continued in `experiment` of the current store ('' when it can)."""
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return f"the store {mlflow.get_tracking_uri()} has no run {run_id}"
    if run.info.lifecycle_stage == "deleted":
        return f"run {run_id} was deleted"
    current = mlflow.get_experiment_by_name(experiment)
    if current is None or current.experiment_id != run.info.experiment_id:
        return f"run {run_id} belongs to another experiment than {experiment!r}"
    return ""


def end_failed(run_id: str, error: BaseException) -> None:
    """End `run_id` FAILED with a `failure` tag naming the exception (called while it propagates)."""
    client = MlflowClient()
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    client.set_tag(run_id, "failure", text[:5000])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=FAILED)
    else:
        client.set_terminated(run_id, status=FAILED)


def abandon(run_id: str, reason: str) -> bool:
    """Mark a run that will never be continued: tag `abandoned` = reason, and end it FAILED unless
    it had FINISHED (a finished run is complete, not abandoned). Returns whether it was marked."""
    status = run_status(run_id)
    if status is None or status == FINISHED:
        return False
    client = MlflowClient()
    client.set_tag(run_id, "abandoned", reason[:5000])
    if status not in (FAILED, "KILLED"):
        client.set_terminated(run_id, status=FAILED)
    return True


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def register_checkpoint(run_id: str, local_dir: Path, name: str, artifact_path: str = "model") -> str:
    """Upload an exported checkpoint folder to the run and register it as a new model version.

    `mlflow.register_model("runs:/...")` needs a logged MLflow model flavour; our checkpoint is a plain
    folder (safetensors + config), so the version is created from the run's artifact URI directly.
    Returns the version number.
    """
    client = MlflowClient()
    client.log_artifacts(run_id, str(local_dir), artifact_path)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="Universal multi-modal multitask model.")
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(name, source=source, run_id=run_id)
    return str(version.version)


EVALUATION_TAG = "evaluation"
"""Model version tag holding the version's per-task evaluation (`pipeline.selection.encode`), so the
promotion rule can compare a candidate with the champion without the champion's run."""


PROMOTION_TAG = "promotion"
"""Model version tag: the promotion rule's decision and its reasons, as the evaluate stage logged them."""


def record_evaluation(name: str, version: str, encoded: str) -> None:
    MlflowClient().set_model_version_tag(name, version, EVALUATION_TAG, encoded)


def record_promotion(name: str, version: str, summary: str) -> None:
    MlflowClient().set_model_version_tag(name, version, PROMOTION_TAG, summary[:5000])


def champion(name: str) -> tuple[str | None, str | None]:
    """(version, its encoded evaluation) of the `champion` alias, (None, None) when unset. A champion
    without an evaluation tag (made by an older rule) has evaluation None."""
    try:
        current = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None, None
    return str(current.version), current.tags.get(EVALUATION_TAG)


def evaluation_of(name: str, version: str) -> str | None:
    """The encoded evaluation recorded on `version` (None when it was never evaluated)."""
    return MlflowClient().get_model_version(name, version).tags.get(EVALUATION_TAG)


def set_champion(name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def manifest_fingerprints(manifests: Mapping[str, Path]) -> dict[str, str]:
    """Tag values `data/<task>` = sha256 of each task's manifest (it lists every shard's sha256)."""
    return {f"data/{task}": file_sha256(Path(p)) for task, p in manifests.items()}


def write_run_record(path: Path, record: Mapping[str, Any]) -> None:
    """Atomically write the small JSON that hands the run id and version to later stages."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(record), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def iter_metric_history(run_id: str, key: str) -> Iterator[tuple[int, float]]:
    for m in MlflowClient().get_metric_history(run_id, key):
        yield m.step, m.value
