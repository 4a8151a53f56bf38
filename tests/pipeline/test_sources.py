"""Ingesting sources: demo and files -> deterministic {train,valid,test}.parquet, errors up front."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pipeline.demo import table_meta
from pipeline.sources import PROVENANCE_COLUMNS, SourceError, SourceSpec, ingest, load_splits

SPLITS = ("train", "valid", "test")


def _digests(out: Path) -> dict[str, str]:
    return {s: hashlib.sha256((out / f"{s}.parquet").read_bytes()).hexdigest() for s in SPLITS}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "question": f"what is {i} plus one?", "answer": str(i + 1)} for i in range(start, start + n)]


def test_demo_ingest_is_byte_deterministic_and_seed_dependent(tmp_path):
    spec = SourceSpec(kind="demo", generator="vqa", train=20, valid=5, test=6, corrupt=2)
    counts = ingest(spec, seed=1, out_dir=tmp_path / "a")
    assert counts == {"train": 20, "valid": 5, "test": 6}
    ingest(spec, seed=1, out_dir=tmp_path / "b")
    ingest(spec, seed=2, out_dir=tmp_path / "c")
    a, b, c = (_digests(tmp_path / d) for d in "abc")
    assert a == b
    assert all(a[s] != c[s] for s in SPLITS)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
    # Damage goes to train only: valid/test measure the model, not the damage.
    metas = {s: table_meta(pq.read_table(tmp_path / "a" / f"{s}.parquet")) for s in SPLITS}
    assert len(metas["train"]["corrupt_rows"]) == 2
    assert metas["valid"]["corrupt_rows"] == [] and metas["test"]["corrupt_rows"] == []


def test_demo_spec_is_validated():
    with pytest.raises(SourceError, match="generator"):
        SourceSpec(kind="demo", generator="nope", train=1, valid=1, test=1)
    with pytest.raises(SourceError, match="source.valid"):
        SourceSpec(kind="demo", generator="caption", train=1, test=1)
    with pytest.raises(SourceError, match="corrupt"):
        SourceSpec(kind="demo", generator="caption", train=2, valid=1, test=1, corrupt=3)
    with pytest.raises(SourceError, match="kind"):
        SourceSpec(kind="hf", path="x.parquet")


def test_single_file_split_by_hash_is_stable_when_rows_are_appended(tmp_path):
    spec = SourceSpec(kind="file", path=str(_jsonl(tmp_path / "d.jsonl", _rows(400))), id_column="id",
                      valid_fraction=0.2, test_fraction=0.1)
    counts = ingest(spec, seed=5, out_dir=tmp_path / "o1")
    assert sum(counts.values()) == 400
    assert 40 < counts["valid"] < 120 and 15 < counts["test"] < 70
    before = {s: pq.read_table(tmp_path / "o1" / f"{s}.parquet").column("id").to_pylist() for s in SPLITS}
    assert before["train"] == sorted(before["train"])  # source order kept

    spec2 = SourceSpec(kind="file", path=str(_jsonl(tmp_path / "d2.jsonl", _rows(400) + _rows(100, 400))),
                       id_column="id", valid_fraction=0.2, test_fraction=0.1)
    ingest(spec2, seed=5, out_dir=tmp_path / "o2")
    after = {s: pq.read_table(tmp_path / "o2" / f"{s}.parquet").column("id").to_pylist() for s in SPLITS}
    for s in SPLITS:
        assert [i for i in after[s] if i < 400] == before[s]

    ingest(spec, seed=6, out_dir=tmp_path / "o3")
    other = {s: pq.read_table(tmp_path / "o3" / f"{s}.parquet").column("id").to_pylist() for s in SPLITS}
    assert other != before  # the seed picks the split


def test_without_id_column_duplicate_rows_land_in_the_same_split(tmp_path):
    rows = [{"q": f"q{i % 50}", "a": f"a{i % 50}"} for i in range(300)]  # each row 6 times
    spec = SourceSpec(kind="file", path=str(_jsonl(tmp_path / "dup.jsonl", rows)), valid_fraction=0.3, test_fraction=0.3)
    tables = load_splits(spec, seed=0)
    seen: dict[str, str] = {}
    for s in SPLITS:
        for q in tables[s].column("q").to_pylist():
            assert seen.setdefault(q, s) == s
    assert len(set(seen.values())) == 3


def test_split_column_routes_rows_and_is_dropped(tmp_path):
    table = pa.table({"text": [f"t{i}" for i in range(6)],
                      "part": ["train", "Validation", "test", "train", "dev", "TEST"]})
    pq.write_table(table, tmp_path / "d.parquet")
    spec = SourceSpec(kind="file", path=str(tmp_path / "d.parquet"), split_column="part")
    counts = ingest(spec, seed=0, out_dir=tmp_path / "out")
    assert counts == {"train": 2, "valid": 2, "test": 2}
    valid = pq.read_table(tmp_path / "out" / "valid.parquet")
    assert valid.column_names == ["text", *PROVENANCE_COLUMNS]  # the split column is dropped
    assert valid.column("text").to_pylist() == ["t1", "t4"]
    assert valid.column("__source_row__").to_pylist() == [1, 4]  # index in the source file, not the split


def test_split_column_errors_name_the_column_and_write_nothing(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"], "part": ["train", "holdout"]}), tmp_path / "d.parquet")
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="'split'.*columns: text, part"):
        ingest(SourceSpec(kind="file", path=str(tmp_path / "d.parquet"), split_column="split"), 0, out)
    with pytest.raises(SourceError, match="holdout"):
        ingest(SourceSpec(kind="file", path=str(tmp_path / "d.parquet"), split_column="part"), 0, out)
    assert not out.exists()


def test_per_split_files_csv_and_parquet_with_valid_carved_from_train(tmp_path):
    train = pa.table({"x": [f"r{i}" for i in range(200)], "y": [str(i) for i in range(200)]})
    pcsv.write_csv(train, tmp_path / "train.csv")
    pq.write_table(pa.table({"x": ["t0", "t1"], "y": ["0", "1"]}), tmp_path / "test.parquet")
    spec = SourceSpec(kind="file", train="train.csv", test="test.parquet", valid_fraction=0.25)
    counts = ingest(spec, seed=3, out_dir=tmp_path / "out", base_dir=tmp_path)
    assert counts["test"] == 2 and counts["train"] + counts["valid"] == 200 and 25 < counts["valid"] < 80
    # CSV inferred y as int64; the test file's strings would not match, so it is cast to the train type.
    assert pq.read_table(tmp_path / "out" / "test.parquet").schema == pq.read_table(tmp_path / "out" / "train.parquet").schema


def test_per_split_files_with_other_columns_are_rejected(tmp_path):
    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "tr.parquet")
    pq.write_table(pa.table({"z": ["a"]}), tmp_path / "va.parquet")
    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "te.parquet")
    spec = SourceSpec(kind="file", train=str(tmp_path / "tr.parquet"), valid=str(tmp_path / "va.parquet"),
                      test=str(tmp_path / "te.parquet"))
    with pytest.raises(SourceError, match="va.parquet has columns z"):
        ingest(spec, 0, tmp_path / "out")


def test_missing_file_is_named_and_nothing_is_written(tmp_path):
    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "tr.parquet")
    spec = SourceSpec(kind="file", train=str(tmp_path / "tr.parquet"), valid=str(tmp_path / "tr.parquet"),
                      test=str(tmp_path / "missing.parquet"))
    with pytest.raises(SourceError, match=r"source.test: file not found: .*missing.parquet"):
        ingest(spec, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_ingest_keeps_previous_outputs(tmp_path):
    spec = SourceSpec(kind="demo", generator="infill", train=5, valid=2, test=2)
    ingest(spec, seed=0, out_dir=tmp_path)
    before = _digests(tmp_path)
    bad = SourceSpec(kind="file", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(SourceError, match="nope.jsonl"):
        ingest(bad, seed=0, out_dir=tmp_path)
    assert _digests(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("path, message", [
    ("https://example.com/data.parquet", "is a URL"),
    ("s3://bucket/data.jsonl", "is a URL"),
    ("data.json", "unknown file type '.json'"),
    ("data", "unknown file type '\\(no extension\\)'"),
])
def test_urls_and_unknown_extensions_are_rejected(path, message):
    with pytest.raises(SourceError, match=message):
        SourceSpec(kind="file", path=path)


def test_file_spec_shape_is_validated():
    with pytest.raises(SourceError, match="not both"):
        SourceSpec(kind="file", path="a.csv", train="b.csv")
    with pytest.raises(SourceError, match="not both and not neither"):
        SourceSpec(kind="file")
    with pytest.raises(SourceError, match="at least the train"):
        SourceSpec(kind="file", test="b.csv")
    with pytest.raises(SourceError, match="< 1"):
        SourceSpec(kind="file", path="a.csv", valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(SourceError, match="only for kind: demo"):
        SourceSpec(kind="file", path="a.csv", generator="caption")
