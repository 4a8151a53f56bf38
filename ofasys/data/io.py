"""Small file helpers shared by the data layer: atomic writes and hashing.

Every artefact a later stage relies on is written to a temp name in the same directory and renamed,
so a killed process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

TMP_SUFFIX = ".tmp"
"""Suffix of in-progress files; a rerun deletes leftovers with this suffix."""


def tmp_path_for(path: Path) -> Path:
    """The temp name `path` is written under before the rename (same dir, so os.replace is atomic)."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    tmp = tmp_path_for(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def canonical_json(obj: Any, indent: int | None = None) -> str:
    """Deterministic JSON: sorted keys, no NaN, UTF-8 text kept as is."""
    if indent is None:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    atomic_write_bytes(path, canonical_json(obj, indent=indent).encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """`.npy` encoding of `array` (C order, no pickle); byte-identical for identical arrays."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
    return buf.getvalue()


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}")


def npy_load(data: bytes) -> np.ndarray:
    """Inverse of `npy_bytes`. Parses the simple headers we write directly (np.load's header
    parser uses `ast.literal_eval` and dominated sample reading); anything else goes to np.load."""
    if data[:8] == b"\x93NUMPY\x01\x00":
        hlen = int.from_bytes(data[8:10], "little")
        m = _NPY_HEADER.match(data, 10, 10 + hlen)
        if m:
            shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
            dtype = np.dtype(m.group(1).decode("ascii"))
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if len(data) == 10 + hlen + count * dtype.itemsize:
                return np.frombuffer(data, dtype=dtype, count=count, offset=10 + hlen).reshape(shape).copy()
    return np.load(io.BytesIO(data), allow_pickle=False)
