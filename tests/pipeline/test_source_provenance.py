"""Every raw row says where it came from: `__source__`, `__source_row__`, `__source_id__` (contract C1)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo import table_meta
from pipeline.sources import PROVENANCE_COLUMNS, SourceError, SourceSpec, ingest, load_splits

SPLITS = ("train", "valid", "test")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n: int) -> list[dict]:
    return [{"id": i, "q": f"q{i}", "a": f"a{i % 7}"} for i in range(n)]


def _traced(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in PROVENANCE_COLUMNS)))


def test_single_file_hash_split_rows_point_back_to_their_source_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = _rows(200)
    _jsonl(tmp_path / "data/qa.jsonl", rows)
    tables = load_splits(SourceSpec(kind="file", path="data/qa.jsonl", id_column="id",
                                    valid_fraction=0.2, test_fraction=0.2), seed=3)
    seen = []
    for split in SPLITS:
        table = tables[split]
        assert table.column_names == ["id", "q", "a", *PROVENANCE_COLUMNS]
        assert table.schema.field("__source_row__").type == pa.int64()
        assert table.num_rows > 10
        for record, (source, row, source_id) in zip(table.select(["id", "q", "a"]).to_pylist(), _traced(table)):
            assert source == "data/qa.jsonl"  # relative as given: the raw splits do not name the checkout
            assert rows[row] == record
            assert source_id == json.dumps(record["id"])
            seen.append(row)
    assert sorted(seen) == list(range(200))


def test_split_column_and_string_ids(tmp_path):
    table = pa.table({"key": [f"k{i}" for i in range(6)], "text": [f"t{i}" for i in range(6)],
                      "part": ["test", "train", "valid", "train", "test", "valid"]})
    pq.write_table(table, tmp_path / "d.parquet")
    tables = load_splits(SourceSpec(kind="file", path=str(tmp_path / "d.parquet"), split_column="part",
                                    id_column="key"), seed=0)
    assert _traced(tables["train"]) == [(str(tmp_path / "d.parquet"), 1, "k1"), (str(tmp_path / "d.parquet"), 3, "k3")]
    assert tables["test"].column("__source_row__").to_pylist() == [0, 4]
    assert tables["valid"].column("__source_id__").to_pylist() == ["k2", "k5"]  # a string id is not re-quoted


def test_per_split_files_and_carved_rows_keep_their_own_file_and_index(tmp_path):
    train = [{"x": f"r{i}", "y": i} for i in range(100)]
    _jsonl(tmp_path / "tr.jsonl", train)
    _jsonl(tmp_path / "te.jsonl", [{"x": "t0", "y": 0}, {"x": "t1", "y": None}])
    spec = SourceSpec(kind="file", train="tr.jsonl", test="te.jsonl", id_column="y", valid_fraction=0.3)
    tables = load_splits(spec, seed=1, base_dir=tmp_path)
    assert _traced(tables["test"]) == [(str(tmp_path / "te.jsonl"), 0, "0"), (str(tmp_path / "te.jsonl"), 1, None)]
    for split in ("train", "valid"):  # valid is carved out of the train file: rows keep the train file's index
        assert set(tables[split].column("__source__").to_pylist()) == {str(tmp_path / "tr.jsonl")}
        table = tables[split]
        for record, row in zip(table.column("x").to_pylist(), table.column("__source_row__").to_pylist()):
            assert train[row]["x"] == record
    assert 10 < tables["valid"].num_rows < 50
    assert sorted(tables["train"].column("__source_row__").to_pylist() +
                  tables["valid"].column("__source_row__").to_pylist()) == list(range(100))
    assert tables["train"].schema == tables["test"].schema == tables["valid"].schema


def test_demo_rows_are_numbered_per_split_and_keep_their_metadata(tmp_path):
    spec = SourceSpec(kind="demo", generator="vqa", train=6, valid=2, test=3, corrupt=1)
    tables = load_splits(spec, seed=4)
    for split, n in [("train", 6), ("valid", 2), ("test", 3)]:
        assert _traced(tables[split]) == [("demo:vqa", i, None) for i in range(n)]
    assert len(table_meta(tables["train"])["corrupt_rows"]) == 1  # the generator's metadata survives
    ingest(spec, seed=4, out_dir=tmp_path)
    written = pq.read_table(tmp_path / "train.parquet")
    assert written.column_names[-3:] == list(PROVENANCE_COLUMNS)
    assert table_meta(written)["corrupt_rows"] == table_meta(tables["train"])["corrupt_rows"]


def test_split_assignment_ignores_the_provenance_columns(tmp_path):
    """Without an id column a row's split is a hash of its content: its file and position must not count."""
    rows = [{"q": f"q{i}", "a": f"a{i}"} for i in range(300)]
    a = load_splits(SourceSpec(kind="file", path=str(_jsonl(tmp_path / "a.jsonl", rows))), seed=9)
    b = load_splits(SourceSpec(kind="file", path=str(_jsonl(tmp_path / "other/b.jsonl", rows[::-1]))), seed=9)
    for split in SPLITS:
        assert a[split].num_rows > 0
        assert sorted(a[split].column("q").to_pylist()) == sorted(b[split].column("q").to_pylist())
        for q, row in zip(b[split].column("q").to_pylist(), b[split].column("__source_row__").to_pylist()):
            assert q == f"q{299 - row}"  # the provenance differs (reversed file), the split does not


@pytest.mark.parametrize("column", PROVENANCE_COLUMNS)
def test_a_source_with_a_provenance_column_is_refused(tmp_path, column):
    pq.write_table(pa.table({"text": ["a"], column: ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(SourceError) as info:
        ingest(SourceSpec(kind="file", path=str(tmp_path / "d.parquet")), 0, tmp_path / "out")
    assert str(info.value) == (f"{tmp_path / 'd.parquet'}: has a column named {column!r}, which ingest reserves "
                               "for row provenance (__source__, __source_row__, __source_id__); rename that "
                               "column in the source file")
    assert not (tmp_path / "out").exists()


def test_missing_id_column_is_named_also_with_a_split_column(tmp_path):
    pq.write_table(pa.table({"text": ["a"], "part": ["train"]}), tmp_path / "d.parquet")
    with pytest.raises(SourceError, match=r"tasks.t.source.id_column: .*d.parquet has no column 'uid'"):
        load_splits(SourceSpec(kind="file", path=str(tmp_path / "d.parquet"), split_column="part", id_column="uid"),
                    0, key="tasks.t.source")


def _split_digests(raw: Path) -> dict[str, str]:
    return {s: hashlib.sha256((raw / f"{s}.parquet").read_bytes()).hexdigest() for s in SPLITS}


def test_raw_splits_are_byte_identical_wherever_the_project_is_checked_out(tmp_path, monkeypatch):
    digests = []
    for checkout in ("one", "two/deeper"):
        root = tmp_path / checkout
        _jsonl(root / "data/qa.jsonl", _rows(120))
        monkeypatch.chdir(root)
        ingest(SourceSpec(kind="file", path="data/qa.jsonl"), seed=2, out_dir="data/raw/qa")
        digests.append(_split_digests(root / "data/raw/qa"))
        shutil.rmtree(root / "data/raw")
        ingest(SourceSpec(kind="file", path="data/qa.jsonl"), seed=2, out_dir="data/raw/qa")
        assert digests[-1] == _split_digests(root / "data/raw/qa")
    assert digests[0] == digests[1]
    written = pq.read_table(tmp_path / "one/data/raw/qa/test.parquet")
    assert set(written.column("__source__").to_pylist()) == {"data/qa.jsonl"}
