"""Where a task's raw rows come from, and turning them into `{train,valid,test}.parquet`.

A source is either the embedded demo generator or local files (parquet, JSON lines or CSV, chosen by
extension). Everything that can be wrong with a source (missing file, unknown extension, missing split
column, URL instead of a path) is reported before anything is written, naming the offending path or
column. Nothing is fetched from the network: a URL is rejected with a message saying so.

When one file holds all rows and no split column says which split a row belongs to, rows are assigned
by a hash of `(seed, row id)`, where the row id is the `id_column` value or, without one, the row's
content. So appending rows never moves existing rows between splits, and duplicate rows always land in
the same split (no train/test leakage through duplicates).

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
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "dev": "valid", "test": "test", "testing": "test"}
"""Values accepted in a `split_column` (case-insensitive) -> split."""
READERS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WRITE_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True,
                      write_statistics=True, row_group_size=1024, data_page_version="1.0")


class SourceError(ValueError):
    """A source spec or its files cannot be ingested; the message names the field, path or column."""


@dataclass(frozen=True)
class SourceSpec:
    """A task's raw source, as written under `tasks.<name>.source` in params.yaml.

    Demo: `{kind: demo, generator: caption, train: 8000, valid: 200, test: 500, corrupt: 3}`;
    `train/valid/test` are row counts and `corrupt` damages that many *train* rows (valid and test
    stay clean, so evaluation measures the model, not the damage).
    File: `{kind: file, path: data.jsonl}` (split by `split_column`, or by `valid_fraction` /
    `test_fraction`), or `{kind: file, train: a.parquet, valid: b.parquet, test: c.parquet}`; a split
    missing from the per-split paths is carved out of the train file by its fraction.
    Relative paths are relative to `ingest`'s `base_dir` (the working directory by default).
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


def ingest(spec: SourceSpec, seed: int, out_dir: str | Path, base_dir: str | Path | None = None) -> dict[str, int]:
    """Write `out_dir/{train,valid,test}.parquet` for `spec`; return the row count per split.

    All inputs are read and checked first; files are written only when every split is ready.
    """
    tables = load_splits(spec, seed, base_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _write_atomic(tables[split], out / f"{split}.parquet")
    return {split: tables[split].num_rows for split in SPLITS}


def load_splits(spec: SourceSpec, seed: int, base_dir: str | Path | None = None) -> dict[str, pa.Table]:
    """The three split tables for `spec`, in memory (what `ingest` writes)."""
    if spec.kind == "demo":
        from pipeline.demo import generate

        return {split: generate(spec.generator, split, getattr(spec, split), seed,
                                corrupt=spec.corrupt if split == "train" else 0)
                for split in SPLITS}
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if spec.path is not None:
        path = _resolve(spec.path, base, "path")
        table = _read(path)
        if spec.split_column is not None:
            return _split_by_column(table, spec.split_column, path)
        return _split_by_hash(table, spec, seed, path, carve=("valid", "test"))
    paths = {s: _resolve(getattr(spec, s), base, s) for s in SPLITS if getattr(spec, s) is not None}
    read = {s: _read(p) for s, p in paths.items()}
    missing = tuple(s for s in SPLITS if s not in read)
    tables = dict(read)
    if missing:  # the train file gives up its carved rows: they must not stay in train too
        tables.update(_split_by_hash(read["train"], spec, seed, paths["train"], carve=missing))
    schema = tables["train"].schema
    for split in SPLITS:
        tables[split] = _conform(tables[split], schema, split, paths.get(split, paths["train"]))
    return tables


def _resolve(value: str | os.PathLike, base: Path, field: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise SourceError(f"source.{field}: file not found: {path}")
    return path


def _read(path: Path) -> pa.Table:
    kind = READERS[path.suffix.lower()]
    try:
        if kind == "parquet":
            return pq.read_table(path)
        if kind == "jsonl":
            import pyarrow.json as pj

            return pj.read_json(path)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceError(f"{path}: cannot read as {kind}: {err}") from None


def _split_by_column(table: pa.Table, column: str, path: Path) -> dict[str, pa.Table]:
    if column not in table.column_names:
        raise SourceError(f"source.split_column: {path} has no column {column!r}; "
                          f"its columns: {', '.join(table.column_names)}")
    values = [None if v is None else SPLIT_ALIASES.get(str(v).strip().lower()) for v in
              table.column(column).to_pylist()]
    unknown = sorted({str(raw) for raw, v in zip(table.column(column).to_pylist(), values) if v is None})
    if unknown:
        raise SourceError(f"source.split_column: {path} column {column!r} has values that are not a "
                          f"split: {', '.join(unknown[:10])}; accepted: {', '.join(SPLIT_ALIASES)}")
    rest = table.drop_columns([column])
    labels = pa.array(values, pa.string())
    return {split: rest.filter(pc.equal(labels, split)) for split in SPLITS}


def row_fraction(seed: int, row_id: bytes) -> float:
    """A row's position in [0, 1) for splitting: a hash of (seed, row id), stable across runs."""
    digest = hashlib.sha256(f"{int(seed)}\0".encode() + row_id).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _row_ids(table: pa.Table, id_column: str | None, path: Path) -> list[bytes]:
    if id_column is not None:
        if id_column not in table.column_names:
            raise SourceError(f"source.id_column: {path} has no column {id_column!r}; "
                              f"its columns: {', '.join(table.column_names)}")
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


def _split_by_hash(table: pa.Table, spec: SourceSpec, seed: int, path: Path,
                   carve: tuple[str, ...]) -> dict[str, pa.Table]:
    """Carve the `carve` splits out of `table` by their fractions; the rest is train. Row order kept."""
    fractions = {"test": spec.test_fraction if "test" in carve else 0.0,
                 "valid": spec.valid_fraction if "valid" in carve else 0.0}
    labels = []
    for row_id in _row_ids(table, spec.id_column, path):
        u = row_fraction(seed, row_id)
        labels.append("test" if u < fractions["test"] else
                      "valid" if u < fractions["test"] + fractions["valid"] else "train")
    arr = pa.array(labels, pa.string())
    out = {split: table.filter(pc.equal(arr, split)) for split in ("train", *carve)}
    return out


def _conform(table: pa.Table, schema: pa.Schema, split: str, path: Path) -> pa.Table:
    """Per-split files must have the train file's columns; types are cast to the train file's."""
    if table.schema.names != schema.names:
        if sorted(table.schema.names) != sorted(schema.names):
            raise SourceError(f"source.{split}: {path} has columns {', '.join(table.schema.names)} but the "
                              f"train file has {', '.join(schema.names)}")
        table = table.select(schema.names)
    if table.schema.remove_metadata() != schema.remove_metadata():
        try:
            table = table.cast(schema.remove_metadata())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise SourceError(f"source.{split}: {path} column types do not match the train file's: {err}") from None
    return table


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, **_WRITE_OPTIONS)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
