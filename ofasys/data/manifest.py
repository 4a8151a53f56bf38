"""The shard manifest: what a task's shards hold and how to check them.

Written last and atomically by materialisation, so its presence means every file it lists is
complete; a shard it doesn't list does not exist. Readers verify what they rely on (sha256 of each
shard and lengths file, the vocabulary fingerprint) instead of trusting the directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ofasys.data.io import atomic_write_json, sha256_file

MANIFEST_FORMAT = 2
"""2: lengths files hold (encoder, decoder) positions per sample; 1 held one slot-token total."""
LENGTH_SIDES = ("encoder", "decoder")
"""The columns of a lengths file: what a sample occupies in the model's encoder and decoder."""
RERUN = "re-run materialisation (`dvc repro`, or `materialise_task`) to rewrite the shards"
MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"
REQUIRED_KEYS = ("format", "task", "instruction", "params_hash", "assets", "image_size", "slots", "closed_sets", "splits", "rejects")


class ManifestError(ValueError):
    """The manifest is missing, malformed, or doesn't describe the files next to it."""


class ShardIntegrityError(ManifestError):
    """A file listed in the manifest differs from what the manifest recorded (size or sha256)."""


def lengths_file_name(split: str) -> str:
    return f"{split}-lengths.npy"


def side_stats(lengths: Sequence[int] | np.ndarray) -> dict[str, float]:
    """max / mean / p50 / p95 of one side's per-sample positions (all 0 for an empty split)."""
    arr = np.asarray(lengths, dtype=np.float64)
    if arr.size == 0:
        return {"max": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0}
    return {
        "max": int(arr.max()),
        "mean": round(float(arr.mean()), 4),
        "p50": round(float(np.percentile(arr, 50)), 4),
        "p95": round(float(np.percentile(arr, 95)), 4),
    }


def length_stats(lengths: np.ndarray) -> dict[str, dict[str, float]]:
    """Per side ("encoder", "decoder"), the `side_stats` of an (N, 2) lengths array."""
    arr = np.asarray(lengths).reshape(-1, len(LENGTH_SIDES))
    return {side: side_stats(arr[:, k]) for k, side in enumerate(LENGTH_SIDES)}


def load_lengths(path: str | os.PathLike, num_samples: int) -> np.ndarray:
    """The (num_samples, 2) int32 [encoder, decoder] positions of a split's samples. A lengths file
    of another shape (the 1-D slot-token totals older materialisation wrote) is refused, naming the fix:
    budgets and bucketing need what a sample really occupies."""
    lengths = np.load(path, allow_pickle=False)
    if lengths.ndim == 1:
        raise ManifestError(f"{path}: an old-format lengths file (one slot-token total per sample, not the "
                            f"encoder and decoder positions this code budgets batches by); {RERUN}")
    if lengths.shape != (num_samples, len(LENGTH_SIDES)):
        raise ManifestError(f"{path}: lengths of shape {lengths.shape}, expected ({num_samples}, "
                            f"{len(LENGTH_SIDES)}) (one [encoder, decoder] row per sample); {RERUN}")
    return lengths.astype(np.int32, copy=False)


def build_manifest(
    *,
    task: str,
    instruction: str,
    params_hash: str,
    vocab_fingerprint: str,
    image_size: int,
    slots: Sequence[Mapping[str, Any]],
    closed_sets: Mapping[str, Sequence[str]],
    splits: Mapping[str, Mapping[str, Any]],
    rejects_count: int,
    seed: int,
    limits: Mapping[str, Any] | None = None,
    image_codes: Mapping[str, Any] | None = None,
    max_repeats: int | None = None,
    frame_stats: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """Assemble the manifest dict (see contracts: shard sample format). `splits[split]` holds
    num_samples, num_rejects, shards (list of dicts), lengths (`length_stats`: per side), lengths_file
    (the (N, 2) [encoder, decoder] positions), lengths_sha256.
    `limits` records the model limit samples were checked against ({"max_positions", "adaptors"},
    None when unchecked), so a reader can tell whether its model takes every sample. `image_codes`
    records the VQ tokenizer image codes were made with (`assets.image_codes`: fingerprint, grid);
    `max_repeats` the most repetitions of a repeat group in the train split (what generation may emit);
    `frame_stats` per frame-output array the train split's per-feature mean and std and its most
    decoder steps (`ofasys.modalities.FRAME_STATS`)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "task": task,
        "instruction": instruction,
        "params_hash": params_hash,
        "seed": seed,
        "assets": {"vocab": vocab_fingerprint},
        "image_size": image_size,
        "slots": [dict(s) for s in slots],
        "closed_sets": {k: sorted(v) for k, v in closed_sets.items()},
        "splits": {k: dict(v) for k, v in splits.items()},
        "rejects": {"count": rejects_count, "path": REJECTS_NAME},
    }
    if limits is not None:
        manifest["limits"] = dict(limits)
    if image_codes is not None:
        manifest["assets"]["image_codes"] = dict(image_codes)
    if max_repeats is not None:
        manifest["max_repeats"] = int(max_repeats)
    if frame_stats:
        manifest["frame_stats"] = {k: dict(v) for k, v in frame_stats.items()}
    return manifest


def write_manifest(path: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    atomic_write_json(path, manifest, indent=1)


def read_manifest(path: str | os.PathLike) -> dict:
    """Load and structurally check a manifest; raise ManifestError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (was the materialise stage run to completion?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    found = manifest.get("format")
    if found != MANIFEST_FORMAT:
        older = isinstance(found, int) and found < MANIFEST_FORMAT
        raise ManifestError(f"{path}: manifest format {found!r}, this code reads {MANIFEST_FORMAT}"
                            + (f"; the shards were written by an older version: {RERUN}" if older else ""))
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{path}: manifest lacks {missing}")
    check_layouts(path, manifest)
    return manifest


def check_layouts(path: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Refuse shards whose arrays a modality now stores differently (e.g. VIDEO frames stored as JPEGs
    by an earlier version): each slot entry is checked by its modality (`Modality.layout_problem`).

    Per slot, not by bumping `MANIFEST_FORMAT`: that would refuse every task's shards, also those
    whose bytes did not change, whereas only the slots whose layout changed need rewriting."""
    from ofasys.modalities import MODALITIES

    for slot in manifest["slots"]:
        handler = MODALITIES.get(slot.get("modality")) if isinstance(slot, Mapping) else None
        problem = handler.layout_problem(slot, manifest["image_size"]) if handler is not None else None
        if problem:
            raise ManifestError(f"{path}: column '{slot.get('column')}': {problem}; {RERUN}")


def verify_file(path: str | os.PathLike, sha256: str, size: int | None = None) -> None:
    """Raise ShardIntegrityError if `path` is missing or its size or sha256 differ from the record."""
    path = Path(path)
    if not path.is_file():
        raise ShardIntegrityError(f"{path}: listed in the manifest but missing")
    if size is not None and path.stat().st_size != size:
        raise ShardIntegrityError(f"{path}: {path.stat().st_size} bytes, the manifest recorded {size}")
    actual = sha256_file(path)
    if actual != sha256:
        raise ShardIntegrityError(
            f"{path}: sha256 {actual} differs from the manifest's {sha256}; the file was modified or "
            f"corrupted after materialisation, re-run the materialise stage"
        )


def verify_manifest(path: str | os.PathLike, splits: Iterable[str] | None = None) -> dict:
    """Read the manifest and verify every shard and lengths file of `splits` (default: all)."""
    path = Path(path)
    manifest = read_manifest(path)
    root = path.parent
    for split in manifest["splits"] if splits is None else splits:
        entry = manifest["splits"].get(split)
        if entry is None:
            raise ManifestError(f"{path}: no split {split!r} (has {sorted(manifest['splits'])})")
        for shard in entry["shards"]:
            verify_file(root / shard["path"], shard["sha256"], shard["bytes"])
        verify_file(root / entry["lengths_file"], entry["lengths_sha256"])
    return manifest
