"""The source fingerprint changes exactly when the data a task reads changes, and hashes each file once."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import source_fingerprint as sf
from pipeline.sources import SourceSpec

OLD = 1_600_000_000_000_000_000  # an mtime well in the past (outside the cache's racy window)


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)
    os.utime(path, ns=(OLD, OLD))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.utime(path, ns=(OLD, OLD))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project dir as the stage sees it: cwd, a jsonl whose images are relative to its own directory."""
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        _png(tmp_path / f"data/caps/img/{i}.png", 40 * i)
    _jsonl(tmp_path / "data/caps/caps.jsonl", [{"img": f"img/{i}.png", "cap": f"c{i}"} for i in range(3)])
    return tmp_path


def _fp(spec: SourceSpec, cache: Path | None = None, seed: int = 1, media=("img",)) -> dict:
    return sf.source_fingerprint(spec, list(media), seed, cache_dir=cache)


def _cache_entries(cache: Path) -> dict:
    (path,) = cache.iterdir()  # one cache file per source, nothing else (no temp file left behind)
    stored = json.loads(path.read_text())
    assert stored["format"] == sf.CACHE_FORMAT
    return stored["files"]


SPEC = SourceSpec(kind="file", path="data/caps/caps.jsonl")


def _reads(monkeypatch) -> list[str]:
    """Record which files the fingerprint reads in full (a counting wrapper around the real hash)."""
    read: list[str] = []
    real = sf.file_sha256

    def counting(path):
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(sf, "file_sha256", counting)
    return read


def test_identical_content_same_fingerprint_and_it_is_plain_json(project):
    a = _fp(SPEC)
    assert a == _fp(SPEC)
    assert json.loads(json.dumps(a)) == a
    assert a["files"] == [{"field": "path", "path": "data/caps/caps.jsonl",
                           "sha256": sf.file_sha256(project / "data/caps/caps.jsonl")}]
    assert a["media"]["files"] == 3 and a["media"]["missing"] == 0
    assert a["spec"]["path"] == "data/caps/caps.jsonl" and a["seed"] == 1
    assert _fp(SPEC, seed=2) != a
    assert _fp(SourceSpec(kind="file", path="data/caps/caps.jsonl", valid_fraction=0.2)) != a


def test_appending_a_row_changes_it(project):
    before = _fp(SPEC)
    with open(project / "data/caps/caps.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"img": "img/0.png", "cap": "again"}) + "\n")
    after = _fp(SPEC)
    assert after["files"] != before["files"]
    assert after["media"] == before["media"]  # same images referenced


def test_replacing_a_referenced_image_under_the_same_name_changes_it(project, tmp_path):
    cache = tmp_path / ".cache/source-fingerprints"
    before = _fp(SPEC, cache)
    _png(project / "data/caps/img/1.png", 200)  # same name, same size on disk would not matter either
    after = _fp(SPEC, cache)
    assert after["files"] == before["files"]
    assert after["media"]["sha256"] != before["media"]["sha256"]


def test_touching_files_without_changing_content_changes_nothing(project, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = _fp(SPEC, cache)
    reads = _reads(monkeypatch)
    for path in [project / "data/caps/caps.jsonl", project / "data/caps/img/2.png"]:
        os.utime(path, ns=(OLD + 10**9, OLD + 10**9))
    assert _fp(SPEC, cache) == before
    assert sorted(reads) == ["2.png", "caps.jsonl"]  # the touched files are read again, the others are not


def test_the_stat_cache_avoids_reading_unchanged_files(project, tmp_path, monkeypatch):
    cache = tmp_path / ".cache/source-fingerprints"
    reads = _reads(monkeypatch)
    first = _fp(SPEC, cache)
    assert sorted(reads) == ["0.png", "1.png", "2.png", "caps.jsonl"]
    entries = _cache_entries(cache)
    assert sorted(entries) == sorted(str(project / p) for p in ["data/caps/caps.jsonl", "data/caps/img/0.png",
                                                                 "data/caps/img/1.png", "data/caps/img/2.png"])
    assert entries[str(project / "data/caps/img/1.png")]["sha256"] == sf.file_sha256(project / "data/caps/img/1.png")
    reads.clear()
    assert _fp(SPEC, cache) == first
    assert reads == []
    reads.clear()
    assert _fp(SPEC, None) == first  # without a cache every file is read: same answer
    assert len(reads) == 4


def test_tasks_sharing_a_cache_dir_keep_their_own_entries(project, tmp_path, monkeypatch):
    cache = tmp_path / ".cache/source-fingerprints"
    _jsonl(project / "data/other.jsonl", [{"img": "caps/img/0.png"}])
    other = SourceSpec(kind="file", path="data/other.jsonl")
    _fp(SPEC, cache), _fp(other, cache)
    reads = _reads(monkeypatch)
    _fp(SPEC, cache), _fp(other, cache)
    assert reads == []
    assert len(list(cache.iterdir())) == 2


def test_recently_modified_files_are_not_cached(project, tmp_path):
    cache = tmp_path / "cache"
    (project / "data/caps/img/0.png").write_bytes((project / "data/caps/img/0.png").read_bytes())  # mtime now
    _fp(SPEC, cache)
    cached = _cache_entries(cache)
    assert str(project / "data/caps/img/0.png") not in cached
    assert str(project / "data/caps/img/1.png") in cached


def test_a_broken_cache_is_ignored(project, tmp_path):
    cache = tmp_path / "cache"
    expected = _fp(SPEC)
    cache.mkdir()
    sf.cache_file(cache, [project / "data/caps/caps.jsonl"]).write_text("{not json")
    assert _fp(SPEC, cache) == expected
    assert len(_cache_entries(cache)) == 4


def test_relative_media_paths_resolve_against_the_source_files_directory(project):
    before = _fp(SPEC)
    assert before["media"]["missing"] == 0  # img/0.png exists next to caps.jsonl, not in the cwd
    _png(project / "img/0.png", 99)  # a same-named file relative to the cwd is not what the rows mean
    assert _fp(SPEC) == before
    os.remove(project / "data/caps/img/0.png")
    missing = _fp(SPEC)
    assert missing["media"]["missing"] == 1
    assert missing["media"]["missing_examples"] == ["data/caps/img/0.png"]


def test_absolute_paths_lists_and_image_dicts_are_followed(project, tmp_path):
    other = tmp_path / "elsewhere/x.png"
    _png(other, 7)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buf, format="PNG")
    table = pa.table({"frames": [[str(other), "img/0.png"], []],
                      "pic": [{"bytes": None, "path": "img/1.png"}, {"bytes": buf.getvalue(), "path": "img/2.png"}]})
    pq.write_table(table, project / "data/caps/mixed.parquet")
    spec = SourceSpec(kind="file", path="data/caps/mixed.parquet")
    before = sf.source_fingerprint(spec, ["frames", "pic", "not_a_column"], 0)
    assert before["media"]["files"] == 3  # x.png, 0.png, 1.png; 2.png is not read: the row carries bytes
    _png(project / "data/caps/img/2.png", 1)
    assert sf.source_fingerprint(spec, ["not_a_column", "pic", "frames"], 0) == before  # column order is moot
    _png(other, 8)
    assert sf.source_fingerprint(spec, ["frames", "pic", "not_a_column"], 0) != before
    only_absent = sf.source_fingerprint(spec, ["not_a_column"], 0)["media"]
    assert only_absent["files"] == 0 and "unreadable_sources" not in only_absent


def test_per_split_files_missing_and_malformed_sources_are_recorded_not_raised(project):
    _jsonl(project / "data/te.jsonl", [{"img": "caps/img/0.png", "cap": "t"}])
    (project / "data/va.jsonl").write_text('{"img": "x.png"\n')
    spec = SourceSpec(kind="file", train="data/caps/caps.jsonl", valid="data/va.jsonl", test="data/gone.jsonl")
    fp = _fp(spec)
    assert [f["field"] for f in fp["files"]] == ["train", "valid", "test"]
    assert fp["files"][2] == {"field": "test", "path": "data/gone.jsonl", "missing": True}
    assert fp["media"]["unreadable_sources"] == ["data/va.jsonl line 1: the JSON object is truncated "
                                                 "(expecting ',' delimiter at the end of the line)"]
    (project / "data/va.jsonl").write_text('{"img": "x.png"}\n')
    assert _fp(spec) != fp


def test_a_demo_source_is_its_spec_and_seed(tmp_path):
    spec = SourceSpec(kind="demo", generator="caption", train=4, valid=1, test=1)
    fp = sf.source_fingerprint(spec, ["img"], 3, cache_dir=tmp_path / "c")
    assert fp == {"format": sf.FORMAT, "kind": "demo", "seed": 3, "spec": sf.spec_as_data(spec)}
    assert fp["spec"]["generator"] == "caption" and fp["spec"]["train"] == 4
    assert sf.source_fingerprint(spec, ["img"], 4) != fp
    assert not (tmp_path / "c").exists()


def test_write_fingerprint_is_byte_stable(project, tmp_path):
    sf.write_fingerprint(_fp(SPEC), tmp_path / "out/a.json")
    sf.write_fingerprint(_fp(SPEC, media=("img", "img")), tmp_path / "out/b.json")
    assert (tmp_path / "out/a.json").read_bytes() == (tmp_path / "out/b.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.json"]
