"""Stage `train`: all task manifests -> weighted multitask stream -> DeepSpeed -> checkpoint + MLflow run.

Launch as `python -m stages.train` (one process), or under `torchrun`/`deepspeed` for several; only
rank 0 talks to MLflow. What earlier invocations left in `checkpoints/ds` (resume, restart in a new
run, or set aside after a params change) is decided by `pipeline.train_state`. A stage that raises
(Ctrl-C included) ends its MLflow run FAILED and re-raises.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from pipeline import run_config
from pipeline.train_state import (CHECKPOINTS, CURVE_KEPT, VALID_CURVE_KEPT, CurveWriter, Prior, fingerprint_parts,
                                  prepare_checkpoint_dir, run_fingerprint)
from stages import cli

log = logging.getLogger("train")

VOCAB = Path("assets/vocab.json")
VQ = Path("assets/vq/vq.safetensors")
"""The VQ image tokenizer, exported beside the weights when a task stores image codes."""
PLOTS = Path("plots")
"""Curves (CSV) and their picture (PNG): git-tracked, so every DVC experiment carries its own."""


def shards_manifest(task: str) -> Path:
    return Path("data/shards") / task / "manifest.json"


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
        if "valid/loss" in metrics:  # every validation gets its line
            losses = " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in sorted(metrics.items())
                              if k.startswith("valid/loss/"))
            log.info("step %d validation: mean %.3f  %s  (best: step %d)", step, metrics["valid/loss"], losses,
                     int(metrics.get("valid/best_step", -1)))
            return
        now = time.monotonic()
        if self.first_step is None:  # speed is counted from the first report (start-up and resume excluded)
            self.first_step, self.start = step, now
            if step < self.max_steps:
                return
        if now - self.last < self.interval and step < self.max_steps:
            return
        self.last = now
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        left = f"{(self.max_steps - step) / rate:.0f}" if rate > 0 else "?"
        losses = " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in sorted(metrics.items())
                          if k.startswith("train/loss/"))
        log.info("step %d/%d  %s  %.1f steps/s  ~%s s left", step, self.max_steps, losses, rate, left)


def check_valid_rows(valid_every: int, manifests: dict[str, Path]) -> None:
    """With validation on, at least one task must have valid rows: fail before training, not at the
    first validation hundreds of updates in."""
    if not valid_every:
        return
    sizes = {name: json.loads(path.read_text())["splits"].get("valid", {}).get("num_samples", 0)
             for name, path in manifests.items()}
    if not any(sizes.values()):
        raise cli.ParamsError(f"train.valid_every: {valid_every}, but no task has valid rows ({', '.join(sizes)} "
                              f"all materialised 0); set train.valid_every: 0, or give the sources valid rows "
                              f"(demo `valid: N`, file `valid_fraction`)")


def main(args, params) -> None:
    from ofasys.data.task_data import ShardTaskData
    from ofasys.model import build_model
    from ofasys.training import Trainer
    from ofasys.vocab import UnifiedVocab

    rank = int(os.environ.get("RANK", "0"))
    vocab = UnifiedVocab.load(VOCAB)
    manifests = {name: shards_manifest(name) for name in params.tasks}
    tasks = [ShardTaskData(manifests[name], "train", vocab) for name in params.tasks]
    model_config = run_config.model_config(params, vocab.size)
    train_config = run_config.train_config(params)
    check_valid_rows(train_config.valid_every, manifests)
    valid = [ShardTaskData(manifests[name], "valid", vocab) for name in params.tasks] if train_config.valid_every else []
    fingerprint = run_fingerprint(params, manifests)

    CHECKPOINTS.mkdir(exist_ok=True)
    ds = CHECKPOINTS / "ds"
    run_id = log_fn = None
    curves: list[CurveWriter] = []
    if rank == 0:
        from pipeline.tracking import write_run_record

        parts = fingerprint_parts(params, manifests)
        prior = prepare_checkpoint_dir(CHECKPOINTS, fingerprint, parts)
        run_id, continued = open_run(params, prior)
    try:
        if rank == 0:
            log_fn = describe_run(params, manifests, vocab, prior, run_id, continued)
            ds.mkdir(parents=True, exist_ok=True)
            write_run_record(ds / "run.json", {"fingerprint": fingerprint, "parts": parts, "run_id": run_id})
            if prior.abandoned_because and prior.run_id and prior.run_id != run_id:
                abandon_run(prior.run_id, f"{prior.abandoned_because}; training continues in run {run_id}")
            PLOTS.mkdir(exist_ok=True)
            curves = [CurveWriter(PLOTS / "train_curve.csv", ds / CURVE_KEPT, prior.resume_step),
                      CurveWriter(PLOTS / "valid_curve.csv", ds / VALID_CURVE_KEPT, prior.resume_step,
                                  prefix="valid/loss")]
        progress = ProgressLog(train_config.max_steps)

        def log_both(step: int, metrics: dict) -> None:
            for curve in curves:
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
            valid_tasks=valid,
            image_codes_path=VQ if VQ.is_file() else None,
        )
        result = trainer.fit()
        if rank != 0:
            return
        for curve in curves:
            curve.flush()
        from pipeline.plots import curves_png

        curves_png(PLOTS / "train_curve.csv", PLOTS / "valid_curve.csv", PLOTS / "curves.png")
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
    run = mlflow.start_run(run_name=tracking.run_name("train", params.tracking),
                           tags=tracking.experiment_tags(params))
    return run.info.run_id, False


def describe_run(params, manifests, vocab, prior: Prior, run_id: str, continued: bool):
    """Params and provenance tags of a new run (a continued run has them); returns the metric logger."""
    import mlflow

    from pipeline import run_config, tracking
    from pipeline.params import flatten

    if prior.resume_step is not None:
        mlflow.set_tag("resumed_from_step", str(prior.resume_step))
    if continued:
        failure = mlflow.get_run(run_id).data.tags.get("failure")
        if failure is not None:  # the run goes on; the failure becomes its history
            mlflow.set_tag("resumed_after_failure", failure)
            mlflow.delete_tag("failure")
        return tracking.MetricLogger(run_id)
    # The resolved configs, defaults included: runs compare on every setting, not only on those
    # their params.yaml happened to spell out.
    tracking.log_params(flatten({"seed": params.seed, "model": run_config.model_config(params, vocab.size),
                                 "train": run_config.train_config(params), "tasks": params.tasks,
                                 "assets": params.assets}))
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
    for picture in (PLOTS / "train_curve.csv", PLOTS / "valid_curve.csv", PLOTS / "curves.png"):
        if picture.exists():
            mlflow.log_artifact(str(picture), "plots")
    if result.best_step is not None:
        mlflow.log_metrics({"valid/best_loss": result.best_valid_loss}, step=result.best_step)
        mlflow.set_tags({"exported_step": str(result.best_step if run_config.train_config(params).export_best else result.step),
                         "stopped_early": str(result.stopped_early).lower()})
    version = tracking.register_checkpoint(run_id, final, params.tracking.registered_model)
    tracking.write_run_record(CHECKPOINTS / "run.json", {
        "run_id": run_id,
        "registered_model": params.tracking.registered_model,
        "version": version,
        "steps": result.step,
        "train_seconds": round(result.train_seconds, 1),
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
    })
    mlflow.end_run()  # last: the run is FINISHED only when everything above succeeded
    log.info("trained %d steps in %.0f s; registered %s version %s",
             result.step, result.train_seconds, params.tracking.registered_model, version)


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
