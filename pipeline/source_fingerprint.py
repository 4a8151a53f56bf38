"""A content fingerprint of a task's raw source, so that editing the data re-runs what depends on it.

The ingest stage depends on its code and on `tasks.<name>.source` in params, but a file source's
*content* is neither: rows appended to a jsonl, or an image replaced under a path the rows list, would
leave DVC "up to date". An always-run stage writes `source_fingerprint(...)` per task with
`write_fingerprint`, and ingest and materialise depend on that file. DVC compares its bytes, so they
re-run exactly when the spec, the seed, a source file's bytes or a referenced media file's bytes
change, and not when a file is merely touched.

What it covers: the spec (as plain data) and the seed; for a file source, each source file's path as
ingest resolves it and the sha256 of its bytes; and for the task's media columns (values are paths to
image/audio/video files) one digest over every referenced file, the path resolved as materialisation
resolves it (relative to the source file's directory) and missing files recorded as missing. Media
given as bytes inside the source are already covered by the source file's own hash. A demo source is
generated from the spec and seed alone, so that is its whole fingerprint.

Hashing every media file on every run would be slow for large datasets, so an optional stat cache
(JSON: absolute path -> size, mtime_ns, ctime_ns, inode, sha256) skips re-reading a file whose stat is
unchanged. The cache only decides whether a file is read again, never what the fingerprint says: a
stale or broken cache costs time, not correctness. A file changed in the last two seconds is not
cached, since a rewrite within the file system's timestamp granularity could keep size and mtime.
Each source gets its own cache file in the cache directory, named by its source files' absolute
paths; entries for files it no longer references are dropped on every write, so a cache stays the
size of its source and tasks sharing the directory never evict each other's entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.sources import SourceError, SourceSpec, read_source, source_paths

FORMAT = 1
"""Version of the fingerprint's layout; part of the fingerprint, so a new layout re-runs ingest once."""
CACHE_FORMAT = 1
RACY_NS = 2_000_000_000
"""Files modified this recently are hashed but not cached (see the module docstring)."""
MISSING_EXAMPLES = 5
"""How many missing media paths the fingerprint names (it counts all of them)."""


def source_fingerprint(spec: SourceSpec, media_columns: Sequence[str], seed: int,
                       base_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> dict:
    """A JSON-able dict that is identical for identical source content and differs when any input does.

    `media_columns` are the task's columns whose values are media file paths; `base_dir` is what ingest
    gets (None: the working directory); `cache_dir` holds the stat caches (None: no cache). Nothing
    here is an error about the data: a missing or malformed source file is recorded (ingest reports it).
    """
    out: dict = {"format": FORMAT, "kind": spec.kind, "seed": int(seed), "spec": spec_as_data(spec)}
    if spec.kind != "file":
        return out
    paths = source_paths(spec, base_dir)
    cache = StatCache(cache_file(Path(cache_dir), paths.values()) if cache_dir is not None else None)
    columns = sorted(set(media_columns))
    files = []
    media: dict[str, str | None] = {}  # resolved media path -> sha256, or None when missing
    errors = []
    for field, path in paths.items():
        digest = cache.sha256(path)
        files.append({"field": field, "path": str(path),
                      **({"sha256": digest} if digest is not None else {"missing": True})})
        if columns and digest is not None:
            try:
                for ref in media_paths(path, columns):
                    media[str(ref)] = None
            except SourceError as err:
                errors.append(str(err))
    out["files"] = files
    if columns:
        h = hashlib.sha256()
        for ref in sorted(media):
            media[ref] = cache.sha256(Path(ref))
            h.update(json.dumps([ref, media[ref]]).encode() + b"\n")
        missing = sorted(ref for ref, digest in media.items() if digest is None)
        out["media"] = {"columns": columns, "files": len(media), "missing": len(missing),
                        "missing_examples": missing[:MISSING_EXAMPLES], "sha256": h.hexdigest()}
        if errors:
            out["media"]["unreadable_sources"] = errors
    cache.save()
    return out


def cache_file(cache_dir: Path, sources: Iterable[Path]) -> Path:
    """The stat cache file in `cache_dir` for a source made of the files `sources`."""
    key = json.dumps(sorted(os.path.abspath(p) for p in sources))
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def spec_as_data(spec: SourceSpec) -> dict:
    """The spec's fields as plain JSON values."""
    return {f.name: os.fspath(v) if isinstance(v, os.PathLike) else v
            for f in dataclasses.fields(spec) for v in [getattr(spec, f.name)]}


def media_paths(source: Path, columns: Sequence[str]) -> set[Path]:
    """The media files the rows of `source` reference in `columns`, resolved against its directory.

    Strings are paths; so is the `path` of a `{"bytes", "path"}` mapping without bytes (the form
    materialisation reads); lists are walked. Bytes are content inside the source file, not references.
    """
    table = read_source(source, columns=columns)
    refs: set[Path] = set()
    for name in table.column_names:
        for value in table.column(name).to_pylist():
            _collect(value, source.parent, refs)
    return refs


def _collect(value: object, base: Path, refs: set[Path]) -> None:
    if isinstance(value, str):
        if value:
            path = Path(value)
            refs.add(path if path.is_absolute() else base / path)
    elif isinstance(value, Mapping):
        if not value.get("bytes") and value.get("path"):
            _collect(value["path"], base, refs)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, base, refs)


def write_fingerprint(fingerprint: dict, path: str | Path) -> None:
    """Write `fingerprint` as sorted-key JSON, atomically (DVC compares these bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(path), json.dumps(fingerprint, sort_keys=True, indent=1) + "\n")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class StatCache:
    """sha256 of files by stat signature, loaded from and saved to one JSON file (or kept in memory)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._old = self._load(path) if path is not None else {}
        self._new: dict[str, dict] = {}

    @staticmethod
    def _load(path: Path) -> dict[str, dict]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # no cache yet, or a broken one: hash everything again
        if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or not isinstance(raw.get("files"), dict):
            return {}
        return {k: v for k, v in raw["files"].items() if isinstance(v, dict)}

    def sha256(self, path: Path) -> str | None:
        """The file's sha256, or None when it is missing, not a regular file, or unreadable."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = os.path.abspath(path)
        signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self._new.get(key) or self._old.get(key)
        if entry is not None and entry.get("stat") == signature and isinstance(entry.get("sha256"), str):
            digest = entry["sha256"]
        else:
            try:
                digest = file_sha256(path)
            except OSError:
                return None
        if time.time_ns() - st.st_mtime_ns > RACY_NS:
            self._new[key] = {"stat": signature, "sha256": digest}
        return digest

    def save(self) -> None:
        """Write the entries seen since loading (only when they changed)."""
        if self.path is None or self._new == self._old:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, json.dumps({"format": CACHE_FORMAT, "files": self._new}, sort_keys=True))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
