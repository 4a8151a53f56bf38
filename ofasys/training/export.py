"""The exported pretrained directory (contracts: "Exported pretrained dir"), safetensors only.

Layout::

    model.safetensors   weights (float tensors as float32, so a bf16-trained model loads on CPU)
    config.json         {"format", "model": ModelConfig dict, "vocab_fingerprint", "tasks": {...}}
    vocab.json          byte copy of the unified vocabulary the model was trained with
    vq.safetensors      byte copy of the VQ image tokenizer, when a task stores images as VQ codes
                        (its fingerprint is config.json's "image_codes")

The directory is assembled under a temp name beside `out_dir` and swapped in with renames, so a
reader sees the old export or the new one, never a mix. Tied weights (the shared embedding and
output projection) are stored once; their other names are recorded in the safetensors metadata and
restored by `load_pretrained_state`. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open

from ofasys.safetensors_bytes import canonical_safetensors

EXPORT_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
IMAGE_CODES_FILE = "vq.safetensors"
TASK_INFO_KEYS = ("instruction", "image_size", "slots", "closed_sets", "assets", "max_repeats", "frame_stats")
"""The manifest keys the inference side needs to rebuild a task's inputs and decode its outputs."""


def tasks_info_from_manifests(manifests: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`{task: manifest subset}` for config.json (keys that are absent are skipped)."""
    return {name: {k: m[k] for k in TASK_INFO_KEYS if k in m} for name, m in sorted(manifests.items())}


def vocab_fingerprint_of_manifests(manifests: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The one vocab fingerprint all manifests record; None if none records one; error if they differ."""
    found = {name: m.get("assets", {}).get("vocab") for name, m in manifests.items()}
    distinct = {fp for fp in found.values() if fp is not None}
    if len(distinct) > 1:
        raise ValueError(f"tasks were materialised with different vocabularies: {found}")
    return distinct.pop() if distinct else None


def image_codes_of_manifests(manifests: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The one VQ tokenizer fingerprint the manifests' image codes were made with (None when no task
    stores image codes); an error if tasks used different ones."""
    found = {name: m.get("assets", {}).get("image_codes", {}).get("fingerprint") for name, m in manifests.items()}
    distinct = {fp for fp in found.values() if fp is not None}
    if len(distinct) > 1:
        raise ValueError(f"tasks were materialised with different VQ image tokenizers: {found}; re-materialise them")
    return distinct.pop() if distinct else None


def _portable_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU float32 copies, each storage once; returns (tensors, {alias name: stored name})."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach()
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                 tuple(t.stride()), t.dtype)
        if t.numel() > 0 and ident in seen:
            aliases[name] = seen[ident]
            continue
        seen[ident] = name
        out = t.to("cpu")
        if out.is_floating_point():
            out = out.float()
        tensors[name] = out.contiguous().clone()
    return tensors, aliases


def save_pretrained(model: torch.nn.Module | Mapping[str, torch.Tensor], model_config: Mapping[str, Any],
                    vocab_path: str | os.PathLike, tasks_info: Mapping[str, Any],
                    out_dir: str | os.PathLike, *, vocab_fingerprint: str | None = None,
                    image_codes_path: str | os.PathLike | None = None) -> Path:
    """Write the pretrained dir for `model` (a module or a state dict) to `out_dir`, atomically.

    The vocabulary is loaded (which verifies the fingerprint it records); `vocab_fingerprint`, when
    given (e.g. from the task manifests), must match it, so an export can never pair weights with
    the wrong vocabulary. When a task stores images as VQ codes (`image_codes` in its manifest), the
    VQ file at `image_codes_path` is checked against that fingerprint and copied beside the weights,
    so the export decodes its image outputs with the tokenizer that made its training codes.
    """
    from ofasys.vocab import UnifiedVocab  # lazily: the export format does not need tokenizers

    vocab_path = Path(vocab_path)
    vocab = UnifiedVocab.load(vocab_path)
    if vocab_fingerprint is not None:
        vocab.check_fingerprint(vocab_fingerprint, where="the trained tasks' manifests")
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors, aliases = _portable_state(state)
    config = {
        "format": EXPORT_FORMAT,
        "model": dict(model_config),
        "vocab_fingerprint": vocab.fingerprint,
        "tasks": dict(tasks_info),
    }
    codes_fingerprint = image_codes_of_manifests(tasks_info)
    if codes_fingerprint is not None:
        from ofasys.vq import load_vq

        if image_codes_path is None:
            raise ValueError("a task stores images as VQ codes, so the export needs the VQ tokenizer file "
                             "(image_codes_path) to decode them")
        load_vq(image_codes_path, expect_fingerprint=codes_fingerprint)
        config["image_codes"] = codes_fingerprint
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / WEIGHTS_FILE).write_bytes(canonical_safetensors(
            tensors, {"format": "pt", "aliases": json.dumps(aliases, sort_keys=True)}))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, sort_keys=True, indent=1, allow_nan=False) + "\n",
                                       encoding="utf-8")
        shutil.copyfile(vocab_path, tmp / VOCAB_FILE)
        if codes_fingerprint is not None:
            shutil.copyfile(image_codes_path, tmp / IMAGE_CODES_FILE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _weights_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / WEIGHTS_FILE if path.is_dir() else path


def load_pretrained_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an export (dir or its model.safetensors), tied names restored; no pickle."""
    weights = _weights_path(path)
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} at {path}")
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state


def load_pretrained_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of an export dir (format checked)."""
    config = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: export format {config.get('format')!r}, this code reads {EXPORT_FORMAT}")
    return config
