"""Stage `train`: all task manifests -> weighted multitask stream -> DeepSpeed -> checkpoint + MLflow run.

Launch as `python -m stages.train` (one process), or under `torchrun`/`deepspeed` for several; only
rank 0 talks to MLflow. `checkpoints/ds` persists across `dvc repro` so a killed run resumes exactly;
when the model, training or task params changed, the stale checkpoints are set aside and training
starts fresh (resuming weights of a different configuration would be silently wrong).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from stages import cli

log = logging.getLogger("train")

CHECKPOINTS = Path("checkpoints")
VOCAB = Path("assets/vocab.json")


def shards_manifest(task: str) -> Path:
    return Path("data/shards") / task / "manifest.json"


def run_fingerprint(params, manifests: dict[str, Path]) -> str:
    """What a resumable checkpoint must match: model/train params, mixture, seed, and the data."""
    blob = {
        "seed": params.seed,
        "model": params.model,
        "train": params.train,
        "weights": {n: t.weight for n, t in params.tasks.items()},
        "data": {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in sorted(manifests.items())},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def prepare_checkpoint_dir(fingerprint: str) -> str | None:
    """Keep `checkpoints/ds` only if it belongs to this configuration; return its MLflow run id."""
    ds = CHECKPOINTS / "ds"
    record = ds / "run.json"
    if ds.exists():
        old = json.loads(record.read_text()) if record.exists() else {}
        if old.get("fingerprint") == fingerprint:
            log.info("resuming: checkpoints/ds matches this configuration")
            return old.get("run_id")
        log.warning("checkpoints/ds is from another configuration; starting fresh")
        shutil.rmtree(ds)
    return None


class CurveWriter:
    """Appends the overall training loss to a CSV (a DVC plot), alongside MLflow."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def __call__(self, step: int, metrics: dict) -> None:
        row = {"step": step, "loss": metrics.get("train/loss")}
        row.update({k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("train/loss/")})
        self.rows.append(row)

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


def build_model_config(section: dict, vocab_size: int):
    """`model:` params: ModelConfig fields, optionally starting from a named `preset`."""
    from ofasys.model import ModelConfig

    fields = dict(section)
    preset = fields.pop("preset", None)
    fields["vocab_size"] = vocab_size
    if preset:
        return ModelConfig.preset(preset, **fields)
    return ModelConfig.from_dict(fields)


def main(args, params) -> None:
    from ofasys.data.task_data import ShardTaskData
    from ofasys.model import UniversalModel
    from ofasys.training import TrainConfig, Trainer
    from ofasys.vocab import UnifiedVocab

    rank = int(os.environ.get("RANK", "0"))
    vocab = UnifiedVocab.load(VOCAB)
    manifests = {name: shards_manifest(name) for name in params.tasks}
    tasks = [ShardTaskData(manifests[name], "train", vocab) for name in params.tasks]
    model_config = build_model_config(params.model, vocab.size)
    train_config = TrainConfig.from_dict({"seed": params.seed, **params.train})
    fingerprint = run_fingerprint(params, manifests)

    CHECKPOINTS.mkdir(exist_ok=True)
    run_id = prepare_checkpoint_dir(fingerprint) if rank == 0 else None
    log_fn = None
    curve = CurveWriter(CHECKPOINTS / "train_curve.csv")
    progress = ProgressLog(train_config.max_steps)
    if rank == 0:
        log_fn, run_id = start_tracking(params, manifests, vocab, run_id)
        (CHECKPOINTS / "ds").mkdir(parents=True, exist_ok=True)
        (CHECKPOINTS / "ds" / "run.json").write_text(json.dumps({"fingerprint": fingerprint, "run_id": run_id}))

    def log_both(step: int, metrics: dict) -> None:
        curve(step, metrics)
        progress(step, metrics)
        if log_fn is not None:
            log_fn(step, metrics)

    final = CHECKPOINTS / "final"
    if final.exists() and rank == 0:
        shutil.rmtree(final)
    model = UniversalModel(model_config)
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


def start_tracking(params, manifests, vocab, run_id):
    import mlflow

    from pipeline import tracking
    from pipeline.params import flatten

    tracking.setup(params.tracking)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else "train")
    if run_id is None:
        tracking.log_params(flatten({"seed": params.seed, "model": params.model, "train": params.train,
                                     "tasks": params.tasks, "assets": params.assets}))
        mlflow.set_tags({
            "git_commit": tracking.git_commit(),
            "dvc_lock_sha256": tracking.file_sha256(Path("dvc.lock")),
            "vocab_fingerprint": vocab.fingerprint,
            **tracking.manifest_fingerprints(manifests),
            **{f"instruction/{n}": t.instruction for n, t in params.tasks.items()},
        })
    return tracking.MetricLogger(run.info.run_id), run.info.run_id


def finish_tracking(params, run_id, result, final: Path) -> None:
    import mlflow

    from pipeline import tracking

    mlflow.log_metrics({"train/seconds": result.train_seconds, "train/init_seconds": result.init_seconds},
                       step=result.step)
    curve = CHECKPOINTS / "train_curve.csv"
    if curve.exists():
        mlflow.log_artifact(str(curve))
    version = tracking.register_checkpoint(run_id, final, params.tracking.registered_model)
    mlflow.end_run()
    tracking.write_run_record(CHECKPOINTS / "run.json", {
        "run_id": run_id,
        "registered_model": params.tracking.registered_model,
        "version": version,
        "steps": result.step,
        "train_seconds": round(result.train_seconds, 1),
    })
    log.info("trained %d steps in %.0f s; registered %s version %s",
             result.step, result.train_seconds, params.tracking.registered_model, version)


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
