"""DVC re-runs exactly what a change needs: params with only the required sections work, and the
data a task reads (its source file and the images it lists) is a dependency, not just its params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.e2e.test_pipeline import _repo_files, _run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

INSTRUCTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"


def _png(path: Path, shade: int) -> None:
    Image.new("RGB", (12, 10), (shade, 255 - shade, 40)).save(path)


def _ran(stdout: str) -> list[str]:
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("inputs")
    for rel in _repo_files():
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    # A file source whose image paths are relative to the source file, not to the project dir.
    src = work / "sources" / "shots"
    (src / "img").mkdir(parents=True)
    rows = []
    for i in range(30):
        _png(src / "img" / f"{i}.png", 7 * i)
        rows.append({"img": f"img/{i}.png", "cap": f"shade {i % 5}"})
    (src / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Only the required sections: every optional one (assets, materialise, model, ...) defaults.
    params = {"seed": 3, "tasks": {"shots": {
        "instruction": INSTRUCTION, "metric": "bleu4", "image_size": 16,
        "source": {"kind": "file", "path": "sources/shots/rows.jsonl", "valid_fraction": 0.1, "test_fraction": 0.1},
    }}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "e2e"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "e2e@localhost"
    _run(["git", "init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "snapshot"], work, env)
    return work, env


def _raw_rows(work: Path) -> int:
    return sum(pq.read_metadata(work / f"data/raw/shots/{s}.parquet").num_rows for s in ("train", "valid", "test"))


def test_data_edits_rerun_exactly_the_stages_that_read_the_data(repo):
    work, env = repo
    first = _run(["dvc", "repro", "materialise@shots"], work, env)
    ran = _ran(first.stdout)
    assert ran == ["resolve", "ingest@shots", "vocab_text@shots", "vq_images@shots", "vq", "assets",
                   "materialise@shots"], ran
    manifest = json.loads((work / "data/shards/shots/manifest.json").read_text())
    assert sum(s["num_samples"] for s in manifest["splits"].values()) == 30  # every relative path resolved
    assert (work / "data/shards/shots/rejects.jsonl").read_text() == ""

    again = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(again.stdout) == ["resolve"]

    with open(work / "sources/shots/rows.jsonl", "a") as fh:  # a new row
        fh.write(json.dumps({"img": "img/3.png", "cap": "shade 3 again"}) + "\n")
    appended = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert "ingest@shots" in _ran(appended.stdout) and "materialise@shots" in _ran(appended.stdout)
    assert _raw_rows(work) == 31

    shard_bytes = {p.name: p.read_bytes() for p in (work / "data/shards/shots").glob("*.tar")}
    _png(work / "sources/shots/img/4.png", 250)  # an image replaced in place: same path, new pixels
    replaced = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(replaced.stdout) == ["resolve", "materialise@shots"]
    assert {p.name: p.read_bytes() for p in (work / "data/shards/shots").glob("*.tar")} != shard_bytes

    os.utime(work / "sources/shots/img/5.png")  # touched, same content: nothing to redo
    touched = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(touched.stdout) == ["resolve"]


def test_a_params_edit_reruns_only_its_stages(repo):
    work, env = repo
    _run(["dvc", "repro", "materialise@shots"], work, env)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tasks"]["shots"]["weight"] = 0.5  # a mixture weight: train's business only
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = subprocess.run(["dvc", "status", "materialise@shots"], cwd=work, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    proc = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(proc.stdout) == ["resolve"]
    params["materialise"] = {"shard_samples": 5}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(proc.stdout) == ["resolve", "materialise@shots"]
    assert len(list((work / "data/shards/shots").glob("train-*.tar"))) > 1


def _misspell_train_key(params: dict) -> None:
    params["train"] = {"max_step": 10}


def _misspell_source_path(params: dict) -> None:
    params["tasks"]["shots"]["source"]["path"] = "sources/shots/row.jsonl"


@pytest.mark.parametrize("edit, message", [
    (_misspell_train_key, "train.max_step: unknown key; did you mean 'max_steps'?"),
    (_misspell_source_path, "tasks.shots.source.path: file not found: sources/shots/row.jsonl"),
])
def test_bad_params_stop_the_first_stage_with_one_line(repo, edit, message):
    """A typo in a key or in a source file's path stops `resolve`, before any task is ingested."""
    work, env = repo
    good = (work / "params.yaml").read_text()
    params = yaml.safe_load(good)
    edit(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = subprocess.run(["dvc", "repro", "materialise@shots"], cwd=work, env=env, capture_output=True, text=True)
    finally:
        (work / "params.yaml").write_text(good)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert message in out
    assert "Traceback" not in out
    assert _ran(proc.stdout) == ["resolve"]


def _status(work: Path, env: dict, *targets: str) -> set[str]:
    """The stages `dvc status --with-deps` lists as changed for `targets` once `resolve` re-ran (it
    is always listed: it runs on every repro to notice source-file edits)."""
    _run(["dvc", "repro", "resolve"], work, env)
    proc = _run(["dvc", "status", "--json", "--with-deps", *targets], work, env)
    return set(json.loads(proc.stdout or "{}")) - {"resolve"}


def _edit(work: Path, change) -> dict:
    params = yaml.safe_load((work / "params.yaml").read_text())
    change(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def test_params_edits_each_way_change_exactly_their_stages_in_dvc_status(repo):
    """The common experiments re-run what they must: a weight or lr only train, a reworded prompt only
    that task's materialise, a new task only its own stages (the vocabulary stays byte-identical)."""
    work, env = repo
    _edit(work, lambda p: p.setdefault("assets", {}).update(vocab_tasks=["shots"]))
    _run(["dvc", "repro", "materialise@shots"], work, env)
    vocab = (work / "assets/vocab.json").read_bytes()
    assert _status(work, env, "materialise@shots") == set()
    # Importing the code (a test run, the Python API) writes bytecode caches beside it: not an edit.
    _run([sys.executable, "-m", "compileall", "-q", "ofasys", "pipeline", "stages"], work, env)
    assert any((work / "pipeline" / "__pycache__").iterdir())
    assert _status(work, env, "materialise@shots") == set()

    _edit(work, lambda p: p["tasks"]["shots"].update(weight=0.3))
    _edit(work, lambda p: p.setdefault("train", {}).update(lr=0.01, max_steps=7))
    assert _status(work, env, "materialise@shots") == set()
    assert "train" in _status(work, env, "train")

    reworded = INSTRUCTION.replace("what does the image describe?", "describe the picture:")
    _edit(work, lambda p: p["tasks"]["shots"].update(instruction=reworded))
    assert _status(work, env, "materialise@shots") == {"materialise@shots"}
    _run(["dvc", "repro", "materialise@shots"], work, env)

    # The new task brings words the vocabulary never saw: the byte-level BPE encodes them as they are.
    other = work / "sources" / "shots" / "other.jsonl"
    other.write_text("".join(json.dumps({"img": f"img/{i}.png", "cap": f"glowing hue number {i % 3}"}) + "\n"
                             for i in range(30)))

    def add_task(p):
        p["tasks"]["shots_too"] = {**p["tasks"]["shots"], "instruction": INSTRUCTION,
                                   "source": {**p["tasks"]["shots"]["source"], "path": "sources/shots/other.jsonl"}}
    _edit(work, add_task)
    # only the new task's own stages (upstream of assets, which reads data/vocab_text): never run yet
    status = _status(work, env, "materialise@shots", "assets")
    assert status == {"ingest@shots_too", "vocab_text@shots_too", "vq_images@shots_too"}, status
    added = _run(["dvc", "repro", "materialise@shots_too"], work, env)
    ran = _ran(added.stdout)  # its empty vq_images directory leaves the VQ (none here) and the vocabulary alone
    assert ran == ["resolve", "ingest@shots_too", "vocab_text@shots_too", "vq_images@shots_too",
                   "materialise@shots_too"], ran
    assert (work / "assets/vocab.json").read_bytes() == vocab
    assert not any((work / "data/vocab_text/shots_too").iterdir())

    _edit(work, lambda p: p["assets"].update(vocab_tasks=["shots", "shots_too"]))  # a rebuild, asked for
    assert _status(work, env, "materialise@shots") == {"vocab_text@shots_too", "assets"}
    rebuilt = _run(["dvc", "repro", "materialise@shots"], work, env)
    assert _ran(rebuilt.stdout) == ["resolve", "vocab_text@shots_too", "assets", "materialise@shots"]
    assert (work / "assets/vocab.json").read_bytes() != vocab
