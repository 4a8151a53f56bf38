"""Command `python -m stages.specialists`: train one specialist per task at the generalist's per-task
compute, evaluate it as the generalist was, and write the comparison to metrics/specialists.json
(a DVC metrics file), metrics/specialists.md and an MLflow run beside the others.

Run it after `dvc repro` (`bash scripts/specialists.sh` does both): it reads the generalist's
metrics/metrics.json, the materialised shards and the vocabulary. Each specialist is a small project
in specialists/<task>/ (its params.yaml, links to the shared shards and vocabulary) run by the same
`train` and `evaluate` stages, so it resumes after a kill exactly as the generalist does, its MLflow
run carries the same metric keys (`eval/<metric>/<task>`) and is labelled `specialist <task>`, and
it registers versions of its own model (`<registered_model>-specialist-<task>`). A specialist whose
params, shards and vocabulary are unchanged since it finished is not trained again (`--force`).
See `pipeline.specialists` for how the compute is matched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.params import ParamsError, parse_params, to_plain
from pipeline.specialists import comparison_table, markdown_table, specialist_params
from stages import cli

log = logging.getLogger("specialists")

WORK_DIR = Path("specialists")
GENERALIST_METRICS = Path("metrics/metrics.json")
OUT_JSON = Path("metrics/specialists.json")
OUT_MD = Path("metrics/specialists.md")
VOCAB = Path("assets/vocab.json")


def _manifest(task: str) -> Path:
    return Path("data/shards") / task / "manifest.json"


def task_shares(params, tasks: list[str]) -> dict[str, float]:
    """Each task's share of the generalist's micro-batches, as its sampler draws them."""
    from ofasys.training.sampler import mixture_probabilities
    from pipeline import run_config

    config = run_config.train_config(params)
    names = list(params.tasks)
    sizes = [json.loads(_manifest(n).read_text())["splits"]["train"]["num_samples"] for n in names]
    probs = mixture_probabilities(names, sizes, {n: t.weight for n, t in params.tasks.items()},
                                  mixture=config.mixture, temperature=config.temperature)
    return {n: float(probs[n]) for n in tasks}


def check_inputs(params, tasks: list[str]) -> dict:
    """The generalist's metrics, after checking everything the run needs is there (exit 2 if not)."""
    for path in [GENERALIST_METRICS, VOCAB, *(_manifest(t) for t in params.tasks)]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `dvc repro` first (the specialists compare against "
                                    f"the generalist it trains and evaluates)")
    generalist = json.loads(GENERALIST_METRICS.read_text())
    for name in tasks:
        entry = generalist.get(name)
        if not isinstance(entry, dict) or entry.get("metric") != params.tasks[name].metric:
            raise ParamsError(f"{GENERALIST_METRICS}: has no {params.tasks[name].metric} result for task {name!r}; "
                              f"it is from other params, run `dvc repro` first")
    return generalist


def link(target: Path, link_path: Path) -> None:
    """A relative symlink `link_path` -> `target` (replaced if it points elsewhere)."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(target.resolve(), link_path.parent.resolve())
    if link_path.is_symlink() and os.readlink(link_path) == rel:
        return
    if link_path.is_symlink() or link_path.exists():
        link_path.unlink()
    os.symlink(rel, link_path)


def prepare(task: str, plain: dict, work: Path) -> str:
    """Write the specialist's project dir; returns its fingerprint (params, shards, vocabulary)."""
    work.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(plain, sort_keys=False)
    tmp = work / "params.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(work / "params.yaml")
    link(VOCAB.parent, work / "assets")
    link(_manifest(task).parent, work / "data/shards" / task)
    raw = Path("data/raw") / task  # exec_acc runs SQL on the databases ingest wrote there
    if raw.is_dir():
        link(raw, work / "data/raw" / task)
    blob = text + _manifest(task).read_text() + hashlib.sha256(VOCAB.read_bytes()).hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()


def run_stage(stage: str, work: Path) -> None:
    """`python -m stages.<stage>` in the specialist's dir, logging to this project's MLflow store."""
    root = Path.cwd().resolve()
    env = {**os.environ, "DVC_ROOT": str(root), "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("DVC_EXP_NAME", None)  # a specialist is not the DVC experiment this command may run in
    proc = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, env=env)
    if proc.returncode != 0:  # the stage said why above; its exit status (2: a user error) is ours
        log.error("%s of specialist %s failed (exit %d); re-running this command resumes it from its last "
                  "checkpoint", stage, work.name, proc.returncode)
        raise SystemExit(proc.returncode)


def set_aside_checkpoints(work: Path) -> None:
    """Make `--force` train from scratch: with its checkpoints in place, the train stage would resume
    a finished run and train nothing. They are moved to checkpoints.previous (replacing the last
    set aside), not deleted."""
    current, previous = work / "checkpoints", work / "checkpoints.previous"
    if current.exists():
        shutil.rmtree(previous, ignore_errors=True)
        current.rename(previous)
        log.info("%s: --force: its checkpoints are set aside in %s", work.name, previous)


def train_specialist(task: str, plain: dict, force: bool) -> dict:
    work = WORK_DIR / task
    fingerprint = prepare(task, plain, work)
    done = work / "done.json"
    metrics = work / "metrics/metrics.json"
    if not force and done.is_file() and metrics.is_file() and \
            json.loads(done.read_text()).get("fingerprint") == fingerprint:
        log.info("%s: specialist already trained with these params and shards (--force to redo)", task)
    else:
        done.unlink(missing_ok=True)
        if force:
            set_aside_checkpoints(work)
        log.info("%s: training its specialist for %d updates", task, plain["train"]["max_steps"])
        run_stage("train", work)
        run_stage("evaluate", work)
        done.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return json.loads(metrics.read_text())[task]


def log_to_mlflow(params, table: dict, generalist_run: str | None) -> None:
    import mlflow

    from pipeline import tracking

    tracking.setup(params.tracking)
    with mlflow.start_run(run_name=tracking.run_name("specialists", params.tracking),
                          tags={**tracking.experiment_tags(params), "generalist_run": generalist_run or "unknown"}):
        for name, row in table["tasks"].items():
            mlflow.log_metric(f"specialists/generalist/{name}", row["generalist"])
            mlflow.log_metric(f"specialists/specialist/{name}", row["specialist"])
            if row["ratio"] is not None:
                mlflow.log_metric(f"specialists/ratio/{name}", row["ratio"])
        if table["mean_ratio"] is not None:
            mlflow.log_metric("specialists/mean_ratio", table["mean_ratio"])
        mlflow.log_artifact(str(OUT_JSON))
        mlflow.log_artifact(str(OUT_MD))


def selected_tasks(arg: str | None, names: list[str]) -> list[str]:
    """The tasks `--tasks` names (all when it is absent), each checked against the params' tasks."""
    if arg is None:
        return list(names)
    tasks = [t.strip() for t in arg.split(",") if t.strip()]
    if not tasks:  # named but empty (an unset shell variable, say): not silently every task
        raise ParamsError(f"--tasks: names no task; give some of {', '.join(names)}, or leave --tasks out for every task")
    for name in tasks:
        if name not in names:
            raise ParamsError(f"--tasks: {name!r} is not a task; tasks: {', '.join(names)}")
    return tasks


def main(args, params) -> None:
    tasks = selected_tasks(args.tasks, list(params.tasks))
    generalist = check_inputs(params, tasks)
    shares = task_shares(params, tasks)
    plain = to_plain(params)
    plans = {}
    for name in tasks:
        if shares[name] <= 0:
            log.info("%s: weight 0 in the mixture, so no compute to match; skipped", name)
            continue
        spec = specialist_params(plain, name, shares[name])
        source = spec["tasks"][name]["source"]
        if source.get("path"):  # the specialist runs in its own dir; a relative source path is relative to here
            source["path"] = str(Path(source["path"]).resolve())
        try:
            parse_params(spec)
        except ParamsError as err:
            raise ParamsError(f"the specialist params of task {name!r} are invalid: {err}") from None
        plans[name] = spec
    results = {name: train_specialist(name, spec, args.force) for name, spec in plans.items()}
    table = comparison_table({n: generalist[n] for n in plans}, results,
                             {n: spec["train"]["max_steps"] for n, spec in plans.items()})
    OUT_JSON.parent.mkdir(exist_ok=True)
    for path, text in ((OUT_JSON, json.dumps(table, indent=2, sort_keys=True) + "\n"), (OUT_MD, markdown_table(table))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    record = Path("checkpoints/run.json")
    generalist_run = json.loads(record.read_text()).get("run_id") if record.is_file() else None
    log_to_mlflow(params, table, generalist_run)
    log.info("generalist vs specialists:\n%s", markdown_table(table))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task)")
    p.add_argument("--force", action="store_true",
                   help="train every specialist again from scratch (old checkpoints go to checkpoints.previous)")
    cli.run(main, p.parse_args())
