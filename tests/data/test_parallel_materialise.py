"""Materialising with worker processes writes exactly what one process writes, rejects and budget
failures included, and a killed parallel run leaves no worker behind and re-runs cleanly."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ofasys.data.materialise as materialise
from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.rejects import RejectBudgetExceeded

ROOT = Path(__file__).resolve().parents[2]
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
VQA = "[IMAGE:img] <BOS> [TEXT:q] <EOS> -> <BOS> [TEXT:a,closed_set] <EOS>"


def dir_hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def tasks(tmp_path, png, parquet, n: int = 23) -> dict[str, dict]:
    """A caption task with corrupt rows (undecodable image, empty caption, over-long caption for the
    model) and a closed-set VQA task, each with a train and a valid split."""
    imgs = [png(12 + i % 7, 9 + i % 5, seed=i) for i in range(n)]
    caps = [" ".join(["one", "two", "three", "four"][: 1 + i % 4]) for i in range(n)]
    imgs[4] = b"not an image"
    caps[9] = " "
    caps[17] = " ".join(["five"] * 40)  # longer than the model's max_positions
    words = ["one", "two", "three"]
    raw = tmp_path / "raw"
    return {
        "caption": {"instruction": CAPTION, "raw_splits": {
            "train": parquet(raw / "caption/train.parquet", {"img": imgs, "cap": caps}),
            "valid": parquet(raw / "caption/valid.parquet", {"img": imgs[:5], "cap": caps[:5]})}},
        "vqa": {"instruction": VQA, "raw_splits": {
            "train": parquet(raw / "vqa/train.parquet", {"img": imgs, "q": caps, "a": [words[i % 3] for i in range(n)]}),
            "valid": parquet(raw / "vqa/valid.parquet", {"img": imgs[:3], "q": caps[:3], "a": words})}},
    }


def config(tmp_path, vocab_path, name: str, task: dict, out: str, **kw) -> MaterialiseConfig:
    from ofasys.model import ModelConfig

    base = dict(task=name, vocab_path=str(vocab_path), out_dir=str(tmp_path / out / name), image_size=8,
                shard_samples=4, reject_budget=0.2, progress=False, seed=3,
                model=ModelConfig(max_positions=32, adaptors={"IMAGE": {"max_grid": 8}}), **task)
    base.update(kw)
    return MaterialiseConfig(**base)


def test_two_workers_write_the_same_bytes_as_one(tmp_path, png, parquet, vocab_path, monkeypatch):
    monkeypatch.setattr(materialise, "CHUNK_ROWS", 3)  # many chunks, interleaved over the workers
    for name, task in tasks(tmp_path, png, parquet).items():
        reports = {w: materialise_task(config(tmp_path, vocab_path, name, task, f"w{w}", num_workers=w)) for w in (1, 2)}
        one, two = (dir_hashes(tmp_path / f"w{w}" / name) for w in (1, 2))
        assert one == two, name
        assert str(reports[1]).replace("/w1/", "/w2/") == str(reports[2])
        assert "rejects.jsonl" in one and "train-lengths.npy" in one and "manifest.json" in one
    rejects = (tmp_path / "w2/caption/rejects.jsonl").read_text().splitlines()
    assert [(r["split"], r["row"], r["column"]) for r in map(json.loads, rejects)] == [
        ("train", 4, "img"), ("train", 9, "cap"), ("train", 17, "cap"), ("valid", 4, "img")]


def test_the_reject_budget_fails_the_same_way_with_workers(tmp_path, png, parquet, vocab_path, monkeypatch):
    monkeypatch.setattr(materialise, "CHUNK_ROWS", 5)
    task = tasks(tmp_path, png, parquet)["caption"]
    errors = {}
    for w in (1, 2):
        with pytest.raises(RejectBudgetExceeded) as exc:
            materialise_task(config(tmp_path, vocab_path, "caption", task, f"w{w}", num_workers=w, reject_budget=0.1))
        errors[w] = str(exc.value)
        assert not (tmp_path / f"w{w}/caption/manifest.json").exists()
    assert errors[1].replace("/w1/", "/w2/") == errors[2]
    assert "train: 3/23 rows rejected (13.04%)  <- over budget" in errors[2]
    assert (tmp_path / "w1/caption/rejects.jsonl").read_bytes() == (tmp_path / "w2/caption/rejects.jsonl").read_bytes()


def test_num_workers_must_be_a_positive_integer(tmp_path, vocab_path):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_workers must be an integer >= 1"):
            MaterialiseConfig(task="t", instruction=CAPTION, raw_splits={}, vocab_path=vocab_path, out_dir=tmp_path,
                              num_workers=bad)


KILLABLE = textwrap.dedent(
    """
    import json, sys
    import ofasys.data.materialise as materialise
    from ofasys.data.materialise import MaterialiseConfig, materialise_task

    if __name__ == "__main__":
        materialise.CHUNK_ROWS = 2
        materialise_task(MaterialiseConfig(**json.loads(sys.argv[1])))
    """
)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_parallel_run_leaves_no_worker_and_reruns_cleanly(tmp_path, png, parquet, vocab_path):
    n = 600
    rows = {"img": [png(48, 48, seed=i) for i in range(n)], "cap": ["one two"] * n}
    cfg = dict(task="caption", instruction=CAPTION, vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"),
               raw_splits={"train": parquet(tmp_path / "raw/train.parquet", rows)}, image_size=32,
               shard_samples=20, progress=False, num_workers=2)
    script = tmp_path / "run.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and not (out.is_dir() and any(out.glob("train-*.tar"))):
            workers |= _children(proc.pid) if proc.poll() is None else set()
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed; give it more rows"
        workers |= _children(proc.pid)
        spawned = {w for w in workers if "spawn_main" in _cmdline(w)}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(spawned) == 2, workers
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [w for w in spawned if _alive(w)]
    for w in orphans:  # leave nothing running whatever the outcome
        os.kill(w, signal.SIGKILL)
    assert not orphans, "a worker outlived the killed run"
    assert not (out / "manifest.json").exists()

    report = materialise_task(MaterialiseConfig(**cfg))  # the re-run
    assert report.splits["train"].num_samples == n
    clean = materialise_task(MaterialiseConfig(**{**cfg, "out_dir": str(tmp_path / "clean"), "num_workers": 1}))
    assert dir_hashes(out) == dir_hashes(clean.manifest_path.parent)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_video_frames_are_the_same_bytes_with_workers_in_either_layout(tmp_path, vocab_path, monkeypatch):
    """VIDEO rows (the demo's clips, damaged ones included): pixel frames and `jpeg_frames` each write
    the same bytes with 1 and 2 workers, and both layouts count the same positions (lengths files)
    and reject the same rows."""
    import pyarrow.parquet as pq

    from ofasys.model import ModelConfig
    from pipeline.demo import generate

    monkeypatch.setattr(materialise, "CHUNK_ROWS", 3)
    raw = tmp_path / "raw" / "train.parquet"
    raw.parent.mkdir()
    pq.write_table(generate("video_caption", "train", 10, seed=2, corrupt=2), raw)
    model = ModelConfig(max_positions=128, adaptors={"VIDEO": {"max_frames": 4}})
    hashes = {}
    for layout, flag in (("pixels", ""), ("jpeg", ",jpeg_frames")):
        instruction = f"[VIDEO:clip{flag}] <BOS> what does the video show? <EOS> -> <BOS> [TEXT:cap] <EOS>"
        for w in (1, 2):
            materialise_task(MaterialiseConfig(
                task="video", instruction=instruction, raw_splits={"train": str(raw)}, vocab_path=str(vocab_path),
                out_dir=str(tmp_path / layout / f"w{w}"), image_size=16, shard_samples=3, reject_budget=0.3,
                progress=False, seed=3, model=model, num_workers=w))
        one, two = (dir_hashes(tmp_path / layout / f"w{w}") for w in (1, 2))
        assert one == two, layout
        hashes[layout] = one
    same = {"train-lengths.npy", "rejects.jsonl"}
    assert all(hashes["pixels"][name] == hashes["jpeg"][name] for name in same)
    assert hashes["pixels"]["train-000000.tar"] != hashes["jpeg"]["train-000000.tar"]
