"""Small file helpers shared by the data layer: atomic writes, write errors and hashing.

Every artefact a later stage relies on is written to a temp name in the same directory and renamed,
so a killed process leaves either the old file or the new one, never half of one. A write that fails
(disk full, file size limit, read-only or removed directory) removes its temp file and raises one
`OutputWriteError` that names the file, the OS reason and the fix, instead of a traceback.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

TMP_SUFFIX = ".tmp"
"""Suffix of in-progress files; a rerun deletes leftovers with this suffix."""


def tmp_path_for(path: Path) -> Path:
    """The temp name `path` is written under before the rename (same dir, so os.replace is atomic)."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def _mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (its nearest existing ancestor's)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputWriteError(OSError):
    """Writing an output file failed; the partial file is already removed.

    A user error (the data and code are fine, the machine is not): its message is one line naming
    the file, the OS reason and what to do, e.g. "cannot write out/train-000003.tar: No space left on
    device (errno 28); free space on / (the filesystem of out) and re-run". `errno` is the OS error's.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError):
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, reason)
        self.filename = str(path)
        self.path = Path(path)
        directory = self.path.parent
        if cause.errno in _NO_SPACE:
            fix = f"free space on {_mount_point(directory)} (the filesystem of {directory}) and re-run"
        elif cause.errno == errno.EFBIG:
            fix = (f"the file outgrew this process's file size limit (ulimit -f) or the filesystem's; "
                   f"raise the limit or free space on {_mount_point(directory)} and re-run")
        else:
            fix = f"check that {directory} exists, is writable and has free space, then re-run"
        code = f" (errno {cause.errno})" if cause.errno is not None else ""
        self.message = f"cannot write {self.path}: {reason}{code}; {fix}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across worker processes despite the custom __init__
        return (_rebuild_write_error, (self.filename, self.errno, self.strerror))


def _rebuild_write_error(filename: str, err: int | None, reason: str | None) -> OutputWriteError:
    return OutputWriteError(filename, OSError(err, reason))


def discard(path: Path) -> None:
    """Remove a temp file if it exists; a failure to remove it must not hide the original error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def writing(final: Path, *temps: Path) -> Iterator[None]:
    """Turn any OSError of the block into `OutputWriteError(final)` after removing `temps`."""
    try:
        yield
    except OutputWriteError:
        for tmp in temps:
            discard(tmp)
        raise
    except OSError as exc:
        for tmp in temps:
            discard(tmp)
        raise OutputWriteError(final, exc) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file and a rename; OutputWriteError if that fails."""
    path = Path(path)
    tmp = tmp_path_for(path)
    with writing(path, tmp):
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


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) of a simple `.npy` header we write, or None; memoised, since a task's samples
    share a few headers (images one, texts one per length)."""
    m = _NPY_HEADER.match(header)
    if not m:
        return None
    return np.dtype(m.group(1).decode("ascii")), tuple(int(x) for x in m.group(2).split(b",") if x.strip())


def npy_load(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Inverse of `npy_bytes`. Parses the simple headers we write directly (np.load's header
    parser uses `ast.literal_eval` and dominated sample reading); anything else goes to np.load.
    A writable `bytearray` (or a view of one) is used in place, without a copy; read-only bytes are
    copied, so the array is always writable."""
    view = memoryview(data)
    if view[:8] == b"\x93NUMPY\x01\x00":
        hlen = int.from_bytes(view[8:10], "little")
        parsed = _npy_header(bytes(view[10:10 + hlen]))
        if parsed is not None:
            dtype, shape = parsed
            count = math.prod(shape)
            if len(view) == 10 + hlen + count * dtype.itemsize:
                array = np.frombuffer(view, dtype=dtype, count=count, offset=10 + hlen).reshape(shape)
                return array if array.flags.writeable else array.copy()
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
