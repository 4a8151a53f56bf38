"""Signed checkpoints: resume loads only files this machine's trainer wrote.

DeepSpeed checkpoints are torch pickles, and unpickling runs code, so a file dropped into (or
altered in) a checkpoint directory must never reach `torch.load`. After every save the trainer
records, in `<ckpt_dir>/integrity.json`, an HMAC-SHA256 of every file of the saved tag directory
and of the `latest` file, plus an HMAC over the whole record. Before DeepSpeed loads anything,
`verify_checkpoint` recomputes them and refuses a file that is missing, extra (anything in the tag
directory the record does not list) or altered, and a record that was not made with this key.

The key is a random secret kept OUTSIDE the checkpoint directory, so whoever can write checkpoint
files cannot forge a record: the environment variable OFASYS_CHECKPOINT_KEY if set (at least 32
characters; only rank 0 uses the key, on whichever node it runs), else the file
`<checkout>/.cache/ofasys/checkpoint.key` when ofasys runs from a git checkout (next to the torch
extensions cache), else `$XDG_CACHE_HOME/ofasys/checkpoint.key` (default `~/.cache`); created on
first use with permissions 0600, and refused when other users may read or write it.

Verification runs immediately before the load: it stops files planted while no trainer runs, not a
writer racing the load in that instant. For that second case, and as a second layer generally,
the load itself runs with torch's weights-only unpickler (`weights_only_loads`).

The record covers the newest tag only (the one `latest` names, the only one a resume loads). It is
written before `latest` is switched to the new tag; a process killed exactly between the two
writes leaves a record and a `latest` that disagree, which is refused like any other mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

INTEGRITY_FILE = "integrity.json"
LATEST_FILE = "latest"
KEY_ENV = "OFASYS_CHECKPOINT_KEY"
RECORD_FORMAT = 1
MIN_ENV_KEY_CHARS = 32
_KEY_BYTES = 32
_TAG_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CHUNK = 1 << 20
FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
DEEPSPEED_STATE_CLASSES = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)
"""The plain value classes DeepSpeed's (ZeRO / bf16) optimizer states pickle besides tensors and
containers: a loss scaler, an enum, a dataclass. Rebuilding them runs no code chosen by the file."""


class CheckpointIntegrityError(RuntimeError):
    """A checkpoint directory holds state this trainer cannot prove it wrote; nothing was loaded."""


def default_key_path(cache_root: Path | None) -> Path:
    """`<cache_root>/.cache/ofasys/checkpoint.key`, or the user cache dir when there is no root."""
    if cache_root is not None:
        return cache_root / ".cache" / "ofasys" / "checkpoint.key"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ofasys" / "checkpoint.key"


def _read_key_file(path: Path) -> bytes:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointIntegrityError(f"checkpoint key {path} is not a regular file; remove it "
                                       "and a new key is created")
    if info.st_mode & 0o077:
        raise CheckpointIntegrityError(f"checkpoint key {path} is accessible to other users "
                                       f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) < _KEY_BYTES:
        raise CheckpointIntegrityError(f"checkpoint key {path} is not {_KEY_BYTES} hex-encoded bytes; remove "
                                       "it (checkpoints signed with it can then no longer be resumed)")
    return key


def load_or_create_key(path: Path) -> bytes:
    """The secret in `path`, created (0600, atomically, first writer wins) when absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(_KEY_BYTES) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another process created meanwhile
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    return _read_key_file(path)


def checkpoint_key(cache_root: Path | None, environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key: OFASYS_CHECKPOINT_KEY if set, else the key file (see module docstring)."""
    environ = os.environ if environ is None else environ
    secret = environ.get(KEY_ENV)
    if secret is not None:
        if len(secret) < MIN_ENV_KEY_CHARS:
            raise CheckpointIntegrityError(f"{KEY_ENV} must hold at least {MIN_ENV_KEY_CHARS} characters "
                                           f"(got {len(secret)}); e.g. `export {KEY_ENV}=$(openssl rand -hex 32)`")
        return secret.encode()
    return load_or_create_key(default_key_path(cache_root))


def _file_mac(key: bytes, relpath: str, path: Path) -> str:
    """HMAC-SHA256 of a file's bytes, bound to its path inside the checkpoint directory."""
    mac = hmac.new(key, b"ofasys-checkpoint-file\0" + relpath.encode() + b"\0", hashlib.sha256)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            mac.update(chunk)
    return mac.hexdigest()


def _latest_mac(key: bytes, content: bytes) -> str:
    """HMAC-SHA256 of the `latest` file's bytes (same construction as `_file_mac`)."""
    return hmac.new(key, b"ofasys-checkpoint-file\0" + LATEST_FILE.encode() + b"\0" + content,
                    hashlib.sha256).hexdigest()


def _record_mac(key: bytes, record: Mapping[str, object]) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, b"ofasys-checkpoint-record\0" + body.encode(), hashlib.sha256).hexdigest()


def _tag_files(ckpt_dir: Path, tag: str) -> dict[str, Path]:
    """Every entry under the tag directory except directories, by path relative to `ckpt_dir`."""
    out = {}
    for root, dirs, files in os.walk(ckpt_dir / tag):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            out[path.relative_to(ckpt_dir).as_posix()] = path
    return out


def _check_tag(tag: str, where: Path) -> str:
    if not _TAG_RE.match(tag) or tag in (".", ".."):
        raise CheckpointIntegrityError(f"{where} names checkpoint tag {tag!r}, which is not a tag this trainer "
                                       f"writes; delete {where.parent} to start training fresh")
    return tag


def sign_checkpoint(ckpt_dir: Path, tag: str, key: bytes) -> None:
    """Record the MACs of `ckpt_dir/tag` (all ranks must have finished writing it), then point
    `latest` at `tag`. Both writes are atomic (temp file, then rename)."""
    _check_tag(tag, ckpt_dir / LATEST_FILE)
    latest = tag.encode()
    files = {rel: _file_mac(key, rel, path) for rel, path in _tag_files(ckpt_dir, tag).items()}
    record: dict[str, object] = {"format": RECORD_FORMAT, "tag": tag, "files": files,
                                 "latest": _latest_mac(key, latest)}
    record["mac"] = _record_mac(key, record)
    _atomic_write(ckpt_dir / INTEGRITY_FILE, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    _atomic_write(ckpt_dir / LATEST_FILE, latest)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def has_checkpoint_state(ckpt_dir: Path) -> bool:
    """Whether `ckpt_dir` holds anything a resume would act on (`latest` or a record)."""
    return (ckpt_dir / LATEST_FILE).exists() or (ckpt_dir / INTEGRITY_FILE).exists()


def verify_checkpoint(ckpt_dir: Path, key: bytes) -> str:
    """The tag to resume from, after proving every file of it is as this trainer wrote it.

    Raises CheckpointIntegrityError (one line: the file, what is wrong, what to do) otherwise.
    Reads files as bytes only; nothing is unpickled.
    """
    fresh = f"delete {ckpt_dir} to start training fresh"
    record_path = ckpt_dir / INTEGRITY_FILE
    latest_path = ckpt_dir / LATEST_FILE
    if not record_path.is_file():
        raise CheckpointIntegrityError(f"{ckpt_dir} holds a checkpoint but no {INTEGRITY_FILE}, so nothing proves "
                                       f"this trainer wrote it (refusing to unpickle it); {fresh}")
    try:
        record = json.loads(record_path.read_text())
        files, tag, latest_mac = record["files"], record["tag"], record["latest"]
        valid = (isinstance(record, dict) and record.get("format") == RECORD_FORMAT and isinstance(files, dict)
                 and isinstance(tag, str) and isinstance(latest_mac, str) and isinstance(record.get("mac"), str))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise CheckpointIntegrityError(f"{record_path} is not an integrity record this trainer writes; {fresh}")
    if not hmac.compare_digest(record["mac"], _record_mac(key, record)):
        raise CheckpointIntegrityError(f"{record_path} was not written with this machine's checkpoint key "
                                       f"(or was altered); {fresh}")
    _check_tag(tag, record_path)
    # The signed record names the tag; `latest` only mirrors it (DeepSpeed is given the tag). A process
    # killed between writing the record and `latest` leaves no `latest`: the record still resumes.
    latest = latest_path.read_bytes() if latest_path.is_file() else tag.encode()
    if not hmac.compare_digest(latest_mac, _latest_mac(key, latest)):
        raise CheckpointIntegrityError(f"{latest_path} was altered: it names {latest.decode(errors='replace')!r}, "
                                       f"the signed record names {tag!r}; {fresh}")
    on_disk = _tag_files(ckpt_dir, tag)
    extra = sorted(set(on_disk) - set(files))
    if extra:
        raise CheckpointIntegrityError(f"{ckpt_dir / extra[0]} was not written by this trainer (not in "
                                       f"{INTEGRITY_FILE}); remove it, or {fresh}")
    missing = sorted(set(files) - set(on_disk))
    if missing:
        raise CheckpointIntegrityError(f"{ckpt_dir / missing[0]} is missing from checkpoint {tag}; {fresh}")
    for rel in sorted(files):
        path = on_disk[rel]
        if not path.is_file() or not hmac.compare_digest(str(files[rel]), _file_mac(key, rel, path)):
            raise CheckpointIntegrityError(f"{path} was altered since this trainer wrote it; {fresh}")
    return tag


def _deepspeed_state_classes() -> list[Any]:
    found = []
    for module, name in DEEPSPEED_STATE_CLASSES:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # another DeepSpeed version: its files say what is missing
            continue
    return found


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside runs with `weights_only=True`, whatever its caller passes.

    DeepSpeed's checkpoint engine calls `torch.load(..., weights_only=False)`; torch's documented
    TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides that argument, so no DeepSpeed code is patched. The
    restricted unpickler rebuilds tensors, containers and primitive values only, plus the DeepSpeed
    value classes in `DEEPSPEED_STATE_CLASSES`. The variable is process-wide while set; the load is
    synchronous and the previous value is restored afterwards.
    """
    previous = os.environ.get(FORCE_WEIGHTS_ONLY_ENV)
    os.environ[FORCE_WEIGHTS_ONLY_ENV] = "1"
    try:
        with torch.serialization.safe_globals(_deepspeed_state_classes()):
            yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY_ENV, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY_ENV] = previous
