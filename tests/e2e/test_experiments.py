"""Experiments side by side: two `dvc exp run -S ...` on the tiny params, then what a user compares
them with: `dvc exp show` (every per-task metric and its baseline), `dvc metrics diff` between
experiments, and the MLflow runs named by stage and experiment and tagged with both."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_pipeline import TASKS, _fresh_repro, _run

pytestmark = pytest.mark.slow

EXPERIMENTS = {"fewer-steps": "train.max_steps=12", "vqa-weight": "tasks.vqa.weight=0.3"}


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> tuple[Path, dict, dict]:
    work, env, _ = _fresh_repro(tmp_path_factory.mktemp("exp"))
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "baseline run"], work, env)  # metrics/metrics.json is committed with it
    ran = {}
    for name, setting in EXPERIMENTS.items():
        _run(["git", "checkout", "--", "params.yaml"], work, env)  # each experiment varies the baseline once
        ran[name] = _run(["dvc", "exp", "run", "-n", name, "-S", setting], work, env).stdout
    return work, env, ran


def _stages(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def test_a_training_setting_reruns_train_and_what_follows_only(experiments):
    _, _, ran = experiments
    for name in EXPERIMENTS:
        assert _stages(ran[name]) == {"resolve", "train", "evaluate", "infer"}, name


def test_exp_show_lists_every_task_metric_and_its_baseline_per_experiment(experiments):
    work, env, _ = experiments
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], work, env).stdout)
    rows = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                rows[rev.get("name") or exp.get("name")] = data["metrics"]["metrics/metrics.json"]["data"]
    assert set(EXPERIMENTS) <= set(rows)
    for name in EXPERIMENTS:
        metrics = rows[name]
        for task in TASKS:
            metric = metrics[task]["metric"]
            assert isinstance(metrics[task][metric], float) and isinstance(metrics[task][f"{metric}_baseline"], float)
        assert metrics["summary"]["tasks"] == len(TASKS)
    table = _run(["dvc", "exp", "show", "--only-changed", "--no-pager"], work, env).stdout
    assert "fewer-steps" in table and "vqa-weight" in table


def test_metrics_diff_between_experiments(experiments):
    work, env, _ = experiments
    diff = json.loads(_run(["dvc", "metrics", "diff", "fewer-steps", "vqa-weight", "--json", "--all"], work, env).stdout)
    keys = set(diff["metrics/metrics.json"])
    assert {"caption.bleu4", "caption.bleu4_baseline", "asr.wer", "summary.beat_baseline"} <= keys
    assert json.loads(_run(["dvc", "metrics", "diff", "HEAD", "--json", "--all"], work, env).stdout)


def test_mlflow_runs_are_named_and_tagged_by_stage_and_experiment(experiments):
    work, _, _ = experiments
    con = sqlite3.connect(work / "mlflow.db")
    names = {row[0] for row in con.execute("select name from runs")}
    assert {"train · e2e", "train · e2e · fewer-steps", "train · e2e · vqa-weight"} <= names
    tags = {}
    for run, key, value in con.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    by_exp = {t.get("dvc_experiment"): t for t in tags.values()}
    assert {"workspace", "fewer-steps", "vqa-weight"} <= set(by_exp)
    hashes = {by_exp[e]["params_hash"] for e in ("workspace", "fewer-steps", "vqa-weight")}
    assert len(hashes) == 3  # one params hash per experiment
    keys = {row[0] for row in con.execute("select distinct key from metrics")}
    assert {f"train/loss/{t}" for t in TASKS} <= keys  # the same per-task curve keys in every run


def test_plots_diff_between_experiments_renders_each_ones_pictures(experiments, tmp_path):
    work, env, _ = experiments
    _run(["dvc", "plots", "diff", "fewer-steps", "vqa-weight", "-o", str(tmp_path / "page")], work, env)
    page = (tmp_path / "page/index.html").read_text()
    assert page.count("<img") == 4 and "<script" not in page  # curves and metrics, for each experiment
    assert "fewer-steps" in page and "vqa-weight" in page
