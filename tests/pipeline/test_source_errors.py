"""A malformed source file stops ingest with one line naming the file, the line and the real cause."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.sources import SourceError, SourceSpec, ingest, load_splits, read_source

ROOT = Path(__file__).resolve().parents[2]


def _good_lines(n: int) -> list[bytes]:
    return [json.dumps({"id": i, "q": f"what is {i}?", "a": str(i + 1)}).encode() + b"\n" for i in range(n)]


def _error(path: Path) -> str:
    with pytest.raises(SourceError) as info:
        read_source(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_jsonl_line_is_named_with_its_number_and_cause(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(_good_lines(16)) + b'{"id": 16, "q": "what is\n' + b"".join(_good_lines(3)))
    assert _error(path) == (f"{path} line 17: the JSON object is truncated "
                            "(unterminated string starting at column 17)")
    path.write_bytes(b"".join(_good_lines(4)) + b'{"id": 4, "q": "x"')  # cut at end of file, no newline
    assert _error(path) == (f"{path} line 5: the JSON object is truncated "
                            "(expecting ',' delimiter at the end of the line)")


def test_other_invalid_json_names_the_column(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(_good_lines(2)) + b"{'id': 2}\n")
    assert _error(path) == f"{path} line 3: invalid JSON at column 2: expecting property name enclosed in double quotes"
    path.write_bytes(b'{"id": 1, "id": 2}\n')
    assert _error(path) == f"{path} line 1: key 'id' appears twice in the object"


@pytest.mark.parametrize("line, kind", [(b"[1, 2]", "an array"), (b'"text"', "a string"), (b"3", "a number")])
def test_a_json_value_that_is_not_an_object_is_refused(tmp_path, line, kind):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(_good_lines(3)) + line + b"\n")
    assert _error(path) == (f"{path} line 4: {kind}, not a JSON object; "
                            'each line must be one object like {"column": value}')


def test_a_column_that_changes_type_names_both_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1, "b": {"c": [1]}}\n{"a": null}\n{"a": 2.5, "b": {"c": ["x"]}}\n')
    assert _error(path).startswith(f"{path} line 3: column 'b.c[]' is a string here but a number on line 1")
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": "3"}\n')
    assert _error(path).startswith(f"{path} line 3: column 'a' is a string here but a number on line 1")


def test_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \r\n{"a": 2}\n\n')
    assert read_source(path).column("a").to_pylist() == [1, 2]
    path.write_bytes(b'{"a": 1}\n\n\n{"a": [}\n')
    assert _error(path).startswith(f"{path} line 4: invalid JSON at column 8")


def test_non_utf8_bytes_are_named_by_line_and_byte_offset(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "b\xffc"}\n')  # pyarrow alone would read a corrupt string
    assert _error(path) == (f"{path} line 2: invalid UTF-8 byte 0xff at byte offset 20 of the file "
                            "(byte 9 of the line); save the file as UTF-8")
    csv = tmp_path / "x.csv"
    csv.write_bytes(b"a,b\n1,x\n2,caf\xe9\n")  # latin-1: pyarrow alone would make column b binary
    assert _error(csv) == (f"{csv} line 3: invalid UTF-8 byte 0xe9 at byte offset 13 of the file "
                           "(byte 6 of the line); save the file as UTF-8")


def test_a_utf8_bom_is_accepted_and_not_mistaken_for_the_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert read_source(path).column("a").to_pylist() == [1, 2]
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2,}\n')
    assert _error(path) == f"{path} line 2: invalid JSON at column 9: expecting property name enclosed in double quotes"


def test_a_line_longer_than_the_reader_block_is_read(tmp_path):
    path = tmp_path / "x.jsonl"
    big = "x" * (3 << 20)
    path.write_text(json.dumps({"a": "short"}) + "\n" + json.dumps({"a": big}) + "\n", encoding="utf-8")
    assert read_source(path).column("a").to_pylist() == ["short", big]


def test_csv_row_with_the_wrong_field_count_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'a,b\n1,"two\nlines"\n\n3,4,5\n')  # a quoted newline and a blank line before it
    assert _error(path) == (f"{path} line 5: 3 fields but the header (line 1) has 2: '3,4,5'; "
                            "quote values that contain a comma")


@pytest.mark.parametrize("name, data, cause", [
    ("x.jsonl", b"", "the file has no records (it is empty)"),
    ("x.jsonl", b"\n\n", "the file has no records (it is empty)"),
    ("x.csv", b"", "the file is empty (a CSV file starts with a header line)"),
    ("x.csv", b"a,a\n1,2\n", "column 'a' appears more than once; give each column its own name"),
])
def test_empty_files_and_doubled_columns(tmp_path, name, data, cause):
    path = tmp_path / name
    path.write_bytes(data)
    assert _error(path) == f"{path}: {cause}"


def test_corrupt_parquet_names_the_file_and_cause(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": list(range(1000))}), good)
    data = good.read_bytes()
    for name, damaged in [("text.parquet", b"not parquet at all"), ("cut.parquet", data[: len(data) // 2]),
                          ("zeroed.parquet", data[:100] + b"\0" * 200 + data[300:])]:
        (tmp_path / name).write_bytes(damaged)
        message = _error(tmp_path / name)
        assert message.startswith(f"{tmp_path / name}: not a readable parquet file: ")
        assert message.endswith("; check that the copy is complete or write it again")
        assert "Could not open" not in message  # pyarrow's own prefix repeats the path


def test_errors_stop_ingest_before_anything_is_written(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(_good_lines(5)) + b"[1]\n")
    with pytest.raises(SourceError, match=r"x.jsonl line 6: an array"):
        ingest(SourceSpec(kind="file", path=str(path)), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_names_the_params_key_and_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = SourceSpec(kind="file", path="data/qa.jsonl")
    with pytest.raises(SourceError) as info:
        load_splits(spec, 0, key="tasks.qa.source")
    assert str(info.value) == (f"tasks.qa.source.path: file not found: data/qa.jsonl (relative to {tmp_path}); "
                               "fix the path in params or create the file")
    (tmp_path / "data/qa.jsonl").mkdir(parents=True)
    with pytest.raises(SourceError, match="tasks.qa.source.path: is a directory, not a file: data/qa.jsonl"):
        load_splits(spec, 0, key="tasks.qa.source")


def _stage(tmp_path: Path, source: dict) -> subprocess.CompletedProcess:
    raw = yaml.safe_load((ROOT / "tests/e2e/params_tiny.yaml").read_text())
    raw["tasks"]["vqa"]["source"] = source
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "stages.ingest", "--params", "params.yaml", "--task", "vqa"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_the_ingest_stage_reports_source_errors_in_one_line_with_exit_status_2(tmp_path):
    proc = _stage(tmp_path, {"kind": "file", "path": "data/vqa.jsonl"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (f"error: tasks.vqa.source.path: file not found: data/vqa.jsonl (relative to {tmp_path})"
            in proc.stderr)

    (tmp_path / "data").mkdir()
    (tmp_path / "data/vqa.jsonl").write_bytes(b"".join(_good_lines(16)) + b'{"id": 16, "q": "wh\n')
    proc = _stage(tmp_path, {"kind": "file", "path": "data/vqa.jsonl"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: data/vqa.jsonl line 17: the JSON object is truncated (unterminated string" in proc.stderr
    assert not (tmp_path / "data/raw").exists()
