"""End to end: `dvc repro` on tiny params in a temporary git copy of the repository.

Runs the real DVC, WebDataset, DeepSpeed and MLflow (sqlite store, local artifacts) and checks what a
user would look at: shards and manifests, rejects, the MLflow run with per-task curves, the registered
version and its alias, the metrics file, and the predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("caption", "grounding", "vqa", "infill", "asr", "phones")

pytestmark = pytest.mark.slow


def _repo_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _fresh_repro(work: Path, params: Path = ROOT / "tests/e2e/params_tiny.yaml") -> tuple[Path, dict, str]:
    """Copy the checkout (tracked and untracked, not ignored: no data, no DVC cache) and `dvc repro`."""
    for rel in _repo_files():
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    shutil.copy(params, work / "params.yaml")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TORCH_EXTENSIONS_DIR"] = env.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions"))
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "e2e"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "e2e@localhost"
    _run(["git", "init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "e2e snapshot"], work, env)
    proc = _run(["dvc", "repro"], work, env)
    return work, env, proc.stdout


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> tuple[Path, dict, str]:
    return _fresh_repro(tmp_path_factory.mktemp("repo"))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_fresh_runs_give_identical_shards_weights_and_metrics(pipeline_run, tmp_path_factory):
    """Same params and seed, two fresh checkouts: byte-identical shards and exported weights, and the
    same metrics, because everything random (data, init, sampling, masking, dropout) is seeded."""
    first, _, _ = pipeline_run
    second, _, _ = _fresh_repro(tmp_path_factory.mktemp("repo-again"))
    for task in TASKS:
        assert _tree_bytes(first / "data/shards" / task) == _tree_bytes(second / "data/shards" / task), task
    final_a, final_b = _tree_bytes(first / "checkpoints/final"), _tree_bytes(second / "checkpoints/final")
    assert final_a.keys() == final_b.keys() and "model.safetensors" in final_a
    assert final_a == final_b
    metrics = [json.loads((w / "metrics/metrics.json").read_text()) for w in (first, second)]
    assert metrics[0] == metrics[1]
    curves = [(w / "plots/train_curve.csv").read_text() for w in (first, second)]
    assert curves[0] == curves[1]


def test_shards_manifest_and_rejects(pipeline_run):
    work, _, _ = pipeline_run
    for task in TASKS:
        out = work / "data/shards" / task
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["task"] == task
        listed = {s["path"] for split in manifest["splits"].values() for s in split["shards"]}
        on_disk = {p.name for p in out.glob("*.tar")}
        assert listed == on_disk and listed
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                with tarfile.open(out / shard["path"]) as tar:
                    names = tar.getnames()
                assert sum(n.endswith(".json") for n in names) == shard["num_samples"]
    rejects = [json.loads(line) for line in (work / "data/shards/caption/rejects.jsonl").read_text().splitlines()]
    assert rejects and all(r["reason"] for r in rejects)
    # the damaged utterance of the speech task is a rejected row with an audio reason, not a crash
    audio = [json.loads(line) for line in (work / "data/shards/asr/rejects.jsonl").read_text().splitlines()]
    assert audio and all(r["column"] == "wav" and "audio" in r["reason"] for r in audio)


def test_mlflow_run_curves_and_registry(pipeline_run):
    work, _, _ = pipeline_run
    con = sqlite3.connect(work / "mlflow.db")
    keys = {row[0] for row in con.execute("select distinct key from metrics")}
    for task in TASKS:
        assert f"train/loss/{task}" in keys
    versions = con.execute("select name, version from model_versions").fetchall()
    assert ("e2e-model", 1) in versions
    # the promotion rule decided, said why on the version, and the alias agrees with it
    promotion = dict(con.execute("select key, value from model_version_tags where version = 1").fetchall())["promotion"]
    aliases = con.execute("select alias, version from registered_model_aliases").fetchall()
    assert (("champion", 1) in aliases) == promotion.startswith("promoted: no champion yet"), promotion
    runs = dict(con.execute("select run_uuid, name from runs").fetchall())
    assert set(runs.values()) == {"train · e2e"}  # stage · MLflow experiment (no DVC experiment here)
    tags = {row[0] for row in con.execute("select key from tags")}
    assert {"git_commit", "dvc_lock_sha256", "vocab_fingerprint", "dvc_experiment", "params_hash"} <= tags


def test_metrics_and_predictions(pipeline_run):
    work, _, _ = pipeline_run
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    for task in TASKS:
        entry = metrics[task]
        name = entry["metric"]
        assert {name, f"{name}_baseline", "gain", "num_samples", "degenerate"} <= set(entry)
        # error rates (WER, PER) count insertions too, so an untrained model may score above 1; BLEU is 0-100
        assert 0.0 <= entry[name] <= (10.0 if not entry["higher_is_better"] else 100.0 if name == "bleu4" else 1.0)
    preds = pq.read_table(work / "predictions/grounding.parquet").to_pylist()
    manifest = json.loads((work / "data/shards/grounding/manifest.json").read_text())
    assert len(preds) == manifest["splits"]["test"]["num_samples"]
    assert all(len(p["prediction"]) == 4 and len(p["reference"]) == 4 for p in preds)  # boxes: 4 floats
    assert len({p["key"] for p in preds}) == len(preds)
    # what a user acts on: the row to find, what went in, what came out, how good it was
    raw = pq.read_table(work / "data/raw/grounding/test.parquet").to_pylist()
    for p in preds:
        assert p["source"] == "demo:grounding" and p["id"] == str(p["source_row"])
        assert p["input.query"] == raw[p["source_row"]]["query"] and p["input.img"].endswith("bytes>")
        assert p["score"] in (0.0, 1.0)  # the box's IoU >= 0.5 hit
    # every task of infer.tasks is kept; evaluate's predictions carry scores too
    vqa = pq.read_table(work / "predictions/vqa.parquet").to_pylist()
    assert vqa and all(isinstance(p["prediction"], str) and "input.question" in p for p in vqa)
    for task in TASKS:
        scored = pq.read_table(work / "metrics/predictions" / f"{task}.parquet").column("score").to_pylist()
        assert len(scored) == metrics[task]["num_samples"]


def test_plots_render_offline_and_galleries_show_examples(pipeline_run, tmp_path):
    from PIL import Image

    work, env, _ = pipeline_run
    for png in ("plots/curves.png", "plots/metrics.png"):
        assert Image.open(work / png).format == "PNG"
    _run(["dvc", "plots", "show", "-o", str(tmp_path / "page")], work, env)
    page = (tmp_path / "page/index.html").read_text()
    assert page.count("<img") == 2 and "<script" not in page  # nothing to fetch: it renders offline
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    for task in TASKS:
        gallery = (work / "metrics/gallery" / f"{task}.html").read_text()
        assert gallery.count('<div class="card') == min(24, metrics[task]["num_samples"]), task
    grounding = (work / "metrics/gallery/grounding.html").read_text()
    assert "data:image/png;base64," in grounding and "<b>query</b>" in grounding  # the picture and the query
    assert "(id test-" not in grounding  # each card names its source row, not just the shard key


def test_second_repro_is_a_noop(pipeline_run):
    """Only `resolve` (always run: it fingerprints the source data) runs; every other stage is skipped."""
    work, env, _ = pipeline_run
    proc = _run(["dvc", "repro"], work, env)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'resolve':"], proc.stdout


def test_train_stage_under_torchrun_with_two_processes(pipeline_run, tmp_path):
    """The README's multi-process launch of the real stage: 2 ranks over gloo, MLflow on rank 0 only."""
    from ofasys.training.process_group import free_localhost_port

    work, env, _ = pipeline_run
    two = tmp_path / "two"  # a copy: the other tests look at the single-process run
    outputs = {"checkpoints", "mlflow.db", "metrics", "predictions"}  # the run's outputs, at the top level only
    shutil.copytree(work, two, ignore=lambda d, names: outputs & set(names) if Path(d) == work else set())
    env = {**env, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(free_localhost_port()), "-m", "stages.train"], two, env)
    record = json.loads((two / "checkpoints/run.json").read_text())
    max_steps = yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())["train"]["max_steps"]
    assert record["steps"] == max_steps and record["version"] == "1"
    con = sqlite3.connect(two / "mlflow.db")
    assert con.execute("select count(*) from runs").fetchone()[0] == 1  # rank 1 never tracked
    keys = {row[0] for row in con.execute("select distinct key from metrics")}
    assert {f"train/loss/{task}" for task in TASKS} <= keys
    from ofasys import OFASys

    model = OFASys.from_pretrained(two / "checkpoints/final")
    sample = pq.read_table(work / "data/raw/vqa/test.parquet").slice(0, 1).to_pylist()[0]
    out = model.inference("[IMAGE:img] <BOS> [TEXT:question] <EOS> -> <BOS> [TEXT:answer,closed_set] <EOS>",
                          data={"img": sample["img"], "question": sample["question"]})
    assert isinstance(out.text, str)


def test_specialists_train_at_the_generalists_per_task_compute_and_sit_beside_it(pipeline_run, tmp_path):
    """The documented command: one specialist per task, the table in a DVC metrics file and MLflow,
    each specialist a labelled run with its own registered model; a second call trains nothing."""
    work, env, _ = pipeline_run
    copy = tmp_path / "copy"  # the other tests look at the generalist's store
    shutil.copytree(work, copy, symlinks=True)
    cmd = [sys.executable, "-m", "stages.specialists", "--tasks", "vqa,grounding"]
    _run(cmd, copy, env)
    table = json.loads((copy / "metrics/specialists.json").read_text())
    params = yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())
    total = sum(t["weight"] for t in params["tasks"].values())
    for task in ("vqa", "grounding"):
        row = table["tasks"][task]
        share = params["tasks"][task]["weight"] / total
        assert row["specialist_steps"] == max(1, round(params["train"]["max_steps"] * share))
        generalist = json.loads((copy / "metrics/metrics.json").read_text())[task]
        assert row["generalist"] == generalist[generalist["metric"]]
    assert set(table["tasks"]) == {"vqa", "grounding"} and "mean_ratio" in table
    assert "| vqa | accuracy |" in (copy / "metrics/specialists.md").read_text()
    shown = _run(["dvc", "metrics", "show", "--json"], copy, env).stdout
    assert "specialists.json" in shown and "mean_ratio" in shown

    con = sqlite3.connect(copy / "mlflow.db")
    names = {row[0] for row in con.execute("select name from runs")}
    assert {"train · e2e", "train · e2e · specialist vqa", "train · e2e · specialist grounding",
            "specialists · e2e"} <= names
    keys = {row[0] for row in con.execute("select distinct key from metrics")}
    assert {"eval/accuracy/vqa", "specialists/ratio/vqa", "specialists/generalist/grounding"} <= keys
    models = {row[0] for row in con.execute("select name from registered_models")}
    assert {"e2e-model", "e2e-model-specialist-vqa", "e2e-model-specialist-grounding"} <= models

    again = _run(cmd, copy, env)
    assert again.stderr.count("already trained") == 2, again.stderr[-3000:]
