"""Where a task's raw rows come from, and turning them into `{train,valid,test}.parquet`.

A source is either the embedded demo generator or local files (parquet, JSON lines or CSV, chosen by
extension). Everything that can be wrong with a source (missing file, unknown extension, missing split
column, URL instead of a path, a malformed file) is reported before anything is written, as one
`SourceError` line naming the params key or the file, and for a malformed JSON lines or CSV file the
1-based line and the cause. Nothing is fetched from the network: a URL is rejected with a message
saying so.

Reading one file, and naming the line and cause of a malformed one, is `pipeline.source_readers`:
JSON lines may have blank lines (skipped); text must be UTF-8.

Every raw split carries three provenance columns, `PROVENANCE_COLUMNS`: `__source__` (the source file
as resolved here: relative to the working directory when params gave a relative path, absolute when
absolute; `demo:<generator>` for demo rows), `__source_row__` (the row's 0-based record index in its
own source file, kept through splitting and carving; for demo rows its index in the generated split)
and `__source_id__` (the `id_column` value, JSON-encoded unless a string; null without `id_column`).
A source file that already has one of these columns is refused.

When one file holds all rows and no split column says which split a row belongs to, rows are assigned
by a hash of `(seed, row id)`, where the row id is the `id_column` value or, without one, the row's
content (its own columns only, never the provenance columns). So appending rows never moves existing
rows between splits, and duplicate rows always land in the same split (no train/test leakage through
duplicates).

Output parquet bytes are a function of the input and seed only (fixed writer options), and each file
is written to a temporary name and renamed, so a crash never leaves a half-written split behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.source_readers import READERS, SourceError, read_source

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "dev": "valid", "test": "test", "testing": "test"}
"""Values accepted in a `split_column` (case-insensitive) -> split."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PROVENANCE_COLUMNS = ("__source__", "__source_row__", "__source_id__")
"""Columns ingest adds to every raw split (see the module docstring); not data, and refused in a source."""
_WRITE_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True,
                      write_statistics=True, row_group_size=1024, data_page_version="1.0")


@dataclass(frozen=True)
class SourceSpec:
    """A task's raw source, as written under `tasks.<name>.source` in params.yaml.

    Demo: `{kind: demo, generator: caption, train: 8000, valid: 200, test: 500, corrupt: 3}`;
    `train/valid/test` are row counts and `corrupt` damages that many *train* rows (valid and test
    stay clean, so evaluation measures the model, not the damage).
    File: `{kind: file, path: data.jsonl}` (split by `split_column`, or by `valid_fraction` /
    `test_fraction`), or `{kind: file, train: a.parquet, valid: b.parquet, test: c.parquet}`; a split
    missing from the per-split paths is carved out of the train file by its fraction.
    Relative paths are relative to `ingest`'s `base_dir` (the working directory by default); relative
    media paths inside a file are relative to that file's directory.
    """

    kind: str
    generator: str | None = None
    train: int | str | None = None
    valid: int | str | None = None
    test: int | str | None = None
    corrupt: int = 0
    path: str | None = None
    split_column: str | None = None
    id_column: str | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        per_split = {s: getattr(self, s) for s in SPLITS}
        if self.kind == "demo":
            from pipeline.demo import GENERATORS

            if self.generator not in GENERATORS:
                raise SourceError(f"source.generator: {self.generator!r} is not a demo generator; "
                                  f"known: {', '.join(sorted(GENERATORS))}")
            for split, size in per_split.items():
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise SourceError(f"source.{split}: a demo source needs a row count >= 0, got {size!r}")
            if not isinstance(self.corrupt, int) or not 0 <= self.corrupt <= self.train:
                raise SourceError(f"source.corrupt: must be between 0 and train ({self.train}), "
                                  f"got {self.corrupt!r}")
            for name in ("path", "split_column", "id_column"):
                if getattr(self, name) is not None:
                    raise SourceError(f"source.{name}: only for kind: file, not kind: demo")
        elif self.kind == "file":
            if self.generator is not None:
                raise SourceError("source.generator: only for kind: demo, not kind: file")
            if self.corrupt:
                raise SourceError("source.corrupt: only for kind: demo (it damages generated rows)")
            given = {s: p for s, p in per_split.items() if p is not None}
            if (self.path is None) == (not given):
                raise SourceError("source: a file source needs either `path` (one file) or per-split "
                                  "paths `train`/`valid`/`test`, not both and not neither")
            if given and "train" not in given:
                raise SourceError("source.train: per-split paths need at least the train file")
            for name, value in [("path", self.path), *given.items()]:
                if value is None:
                    continue
                if not isinstance(value, (str, os.PathLike)):
                    raise SourceError(f"source.{name}: expected a file path, got {value!r}")
                if _URL.match(str(value)):
                    raise SourceError(f"source.{name}: {value} is a URL; sources are local files only "
                                      "(nothing is downloaded): fetch it yourself and give the path")
                if Path(value).suffix.lower() not in READERS:
                    raise SourceError(f"source.{name}: {value}: unknown file type "
                                      f"{Path(value).suffix or '(no extension)'!r}; "
                                      f"use one of {', '.join(sorted(READERS))}")
            if self.split_column is not None and given:
                raise SourceError("source.split_column: only with a single `path`, not per-split paths")
            for name in ("valid_fraction", "test_fraction"):
                value = getattr(self, name)
                if not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise SourceError(f"source.{name}: must be in [0, 1), got {value!r}")
            if self.valid_fraction + self.test_fraction >= 1:
                raise SourceError("source: valid_fraction + test_fraction must be < 1 "
                                  f"(got {self.valid_fraction} + {self.test_fraction})")
        else:
            raise SourceError(f"source.kind: must be 'demo' or 'file', got {self.kind!r}")


def ingest(spec: SourceSpec, seed: int, out_dir: str | Path, base_dir: str | Path | None = None,
           key: str = "source") -> dict[str, int]:
    """Write `out_dir/{train,valid,test}.parquet` for `spec`; return the row count per split.

    All inputs are read and checked first; files are written only when every split is ready. `key` is
    the params path of `spec` (e.g. `tasks.caption.source`), used to name fields in error messages.
    """
    tables = load_splits(spec, seed, base_dir, key, files_dir=out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _write_atomic(tables[split], out / f"{split}.parquet")
    return {split: tables[split].num_rows for split in SPLITS}


def source_paths(spec: SourceSpec, base_dir: str | Path | None = None) -> dict[str, Path]:
    """Each source file of a file `spec` by its field (`path`, or `train`/`valid`/`test`), as ingest
    resolves it (whether or not it exists); empty for a demo source.

    A relative path is joined to `base_dir` when one is given and otherwise stays relative to the
    working directory, so `__source__` names a project file the same way on every machine.
    """
    if spec.kind != "file":
        return {}
    fields = ("path",) if spec.path is not None else tuple(s for s in SPLITS if getattr(spec, s) is not None)
    paths = {}
    for field in fields:
        path = Path(getattr(spec, field))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        paths[field] = path
    return paths


def check_source_files(spec: SourceSpec, base_dir: str | Path | None = None, key: str = "source") -> dict[str, Path]:
    """`source_paths`, after checking each names an existing file (SourceError naming the params key
    and the fix otherwise): what `resolve` checks up front, so a wrong path stops `dvc repro` before
    any task is ingested."""
    paths = source_paths(spec, base_dir)
    for field, path in paths.items():
        _check_is_file(path, f"{key}.{field}")
    return paths


def load_splits(spec: SourceSpec, seed: int, base_dir: str | Path | None = None,
                key: str = "source", files_dir: str | Path | None = None) -> dict[str, pa.Table]:
    """The three split tables for `spec`, in memory, provenance columns included (what `ingest` writes).
    `files_dir`: where a demo generator writes a file its rows name (`pipeline.demo.generate`)."""
    if spec.kind == "demo":
        from pipeline.demo import generate

        return {split: add_provenance(generate(spec.generator, split, getattr(spec, split), seed,
                                               corrupt=spec.corrupt if split == "train" else 0, files_dir=files_dir),
                                      f"demo:{spec.generator}")
                for split in SPLITS}
    paths = check_source_files(spec, base_dir, key)
    read = {}
    for field, path in paths.items():
        read[field] = read_source(path)
        _check_not_reserved(read[field], path)
    if spec.path is not None:
        path, table = paths["path"], read["path"]
        full = add_provenance(table, str(path), _source_ids(table, spec.id_column, path, key))
        if spec.split_column is not None:
            labels = _labels_by_column(table, spec.split_column, path, key)
            return _route(full.drop_columns([spec.split_column]), labels, SPLITS)
        return _route(full, _labels_by_hash(table, spec, seed, path, ("valid", "test"), key), SPLITS)
    schema = read["train"].schema
    tables = {}
    for split, table in read.items():
        table = _conform(table, schema, split, paths[split], key)
        tables[split] = add_provenance(table, str(paths[split]), _source_ids(table, spec.id_column, paths[split], key))
    missing = tuple(s for s in SPLITS if s not in read)
    if missing:  # the train file gives up its carved rows: they must not stay in train too
        labels = _labels_by_hash(read["train"], spec, seed, paths["train"], missing, key)
        tables.update(_route(tables["train"], labels, ("train", *missing)))
    return tables


def add_provenance(table: pa.Table, source: str, ids: pa.Array | None = None) -> pa.Table:
    """`table` with `PROVENANCE_COLUMNS` appended: every row from `source`, numbered 0.. in table order.

    Call it on a whole source file (before any filtering), so `__source_row__` is the file's own index.
    """
    n = table.num_rows
    table = table.append_column("__source__", pa.array([source] * n, pa.string()))
    table = table.append_column("__source_row__", pa.array(np.arange(n, dtype=np.int64)))
    return table.append_column("__source_id__", ids if ids is not None else pa.nulls(n, pa.string()))


def _source_ids(table: pa.Table, id_column: str | None, path: Path, key: str) -> pa.Array | None:
    if id_column is None:
        return None
    _check_has_column(table, id_column, path, f"{key}.id_column")
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                     for v in table.column(id_column).to_pylist()], pa.string())


def _route(table: pa.Table, labels: pa.Array, splits: Sequence[str]) -> dict[str, pa.Table]:
    """Rows of `table` per split label, in source order."""
    return {split: table.filter(pc.equal(labels, split)) for split in splits}


def _check_is_file(path: Path, field_key: str) -> None:
    if path.is_file():
        return
    what = "is a directory, not a file" if path.is_dir() else "file not found"
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    raise SourceError(f"{field_key}: {what}: {path}{where}; fix the path in params or create the file")


def _check_not_reserved(table: pa.Table, path: Path) -> None:
    taken = [name for name in PROVENANCE_COLUMNS if name in table.column_names]
    if taken:
        raise SourceError(f"{path}: has a column named {taken[0]!r}, which ingest reserves for row provenance "
                          f"({', '.join(PROVENANCE_COLUMNS)}); rename that column in the source file")


def _check_has_column(table: pa.Table, column: str, path: Path, field_key: str) -> None:
    if column not in table.column_names:
        raise SourceError(f"{field_key}: {path} has no column {column!r}; "
                          f"its columns: {', '.join(table.column_names)}")


# ---------------------------------------------------------------------------------------------- reading


def _labels_by_column(table: pa.Table, column: str, path: Path, key: str) -> pa.Array:
    _check_has_column(table, column, path, f"{key}.split_column")
    raw = table.column(column).to_pylist()
    values = [None if v is None else SPLIT_ALIASES.get(str(v).strip().lower()) for v in raw]
    unknown = sorted({str(r) for r, v in zip(raw, values) if v is None})
    if unknown:
        raise SourceError(f"{key}.split_column: {path} column {column!r} has values that are not a "
                          f"split: {', '.join(unknown[:10])}; accepted: {', '.join(SPLIT_ALIASES)}")
    return pa.array(values, pa.string())


def row_fraction(seed: int, row_id: bytes) -> float:
    """A row's position in [0, 1) for splitting: a hash of (seed, row id), stable across runs."""
    digest = hashlib.sha256(f"{int(seed)}\0".encode() + row_id).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _row_ids(table: pa.Table, id_column: str | None, path: Path, key: str) -> list[bytes]:
    """Split ids from the source's own columns (`table` must not hold the provenance columns)."""
    if id_column is not None:
        _check_has_column(table, id_column, path, f"{key}.id_column")
        return [json.dumps(v, sort_keys=True, default=str).encode() for v in table.column(id_column).to_pylist()]
    names = sorted(table.column_names)
    ids = []
    for row in table.select(names).to_pylist():
        h = hashlib.sha256()
        for name in names:
            value = row[name]
            if isinstance(value, (bytes, bytearray)):
                encoded = b"b" + bytes(value)
            else:
                encoded = b"j" + json.dumps(value, sort_keys=True, default=str).encode()
            h.update(name.encode() + b"\0" + len(encoded).to_bytes(8, "big") + encoded)
        ids.append(h.digest())
    return ids


def _labels_by_hash(table: pa.Table, spec: SourceSpec, seed: int, path: Path, carve: tuple[str, ...],
                    key: str) -> pa.Array:
    """Per row of `table`: one of the `carve` splits (by their fractions) or train."""
    fractions = {"test": spec.test_fraction if "test" in carve else 0.0,
                 "valid": spec.valid_fraction if "valid" in carve else 0.0}
    labels = []
    for row_id in _row_ids(table, spec.id_column, path, key):
        u = row_fraction(seed, row_id)
        labels.append("test" if u < fractions["test"] else
                      "valid" if u < fractions["test"] + fractions["valid"] else "train")
    return pa.array(labels, pa.string())


def _conform(table: pa.Table, schema: pa.Schema, split: str, path: Path, key: str) -> pa.Table:
    """Per-split files must have the train file's columns; types are cast to the train file's."""
    if table.schema.names != schema.names:
        if sorted(table.schema.names) != sorted(schema.names):
            raise SourceError(f"{key}.{split}: {path} has columns {', '.join(table.schema.names)} but the "
                              f"train file has {', '.join(schema.names)}")
        table = table.select(schema.names)
    if table.schema.remove_metadata() != schema.remove_metadata():
        try:
            table = table.cast(schema.remove_metadata())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise SourceError(f"{key}.{split}: {path} column types do not match the train file's: {err}") from None
    return table


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, **_WRITE_OPTIONS)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
