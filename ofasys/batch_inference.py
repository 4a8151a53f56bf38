"""Resumable batch prediction over a materialised split, written to one parquet file.

Predictions are produced in fixed-size chunks; each finished chunk is written atomically to a work
directory keyed by everything that determines it (the library's code, model weights, manifest, split,
decoding options). A killed run restarts at the first missing chunk, and the final parquet is
assembled (atomically) only when every chunk exists, so a reader never sees a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ofasys.evaluation import SamplePrediction, predict, primary_output


@dataclass(frozen=True)
class BatchInferenceConfig:
    beam_size: int = 1
    """Beam size (1 = greedy)."""
    batch_size: int = 64
    """Samples per generation batch."""
    chunk_size: int = 512
    """Samples per resumable chunk (a multiple of batch_size works best)."""
    max_samples: int = 0
    """Predict at most this many samples (0 = the whole split)."""


def _arrow_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


INPUT_PREFIX = "input."
"""Prediction columns holding what each input column held (`input.img`, `input.question`)."""


FRAMES_SUFFIX = ".frames.npy"
"""Suffix of the files frame outputs (a motion's features, speech's log-mel frames) are kept in."""


def save_frames(outputs: Mapping[str, Any], key: str, media_dir: Path) -> dict[str, Any]:
    """`outputs` with every array (a frame output) saved as `<media_dir>/<key>.<column>.npy` (atomically)
    and replaced by that path: thousands of numbers per sample belong in a file, not in a table cell."""
    kept: dict[str, Any] = {}
    for name, value in outputs.items():
        if isinstance(value, np.ndarray):
            media_dir.mkdir(parents=True, exist_ok=True)
            path = media_dir / f"{key}.{name}{FRAMES_SUFFIX}"
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, value, allow_pickle=False)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            value = str(path)
        kept[name] = value
    return kept


def load_frames(value: Any) -> Any:
    """A saved frame output (a `.npy` path `save_frames` wrote) as its array, read without pickle; any
    other value as it is."""
    if isinstance(value, str) and value.endswith(FRAMES_SUFFIX):
        return np.load(value, allow_pickle=False)
    return value


def save_frame_outputs(task_data: Any, column: str, values: Sequence[Any], keys: Sequence[str],
                       out_dir: Path) -> list[str | None]:
    """A frame output's values (arrays, or the `.npy` paths `save_frames` wrote) written as the files
    their users open, `<out_dir>/<key>.npz` for a motion, `.wav` for speech (the modality's
    `save_output`); their paths, None where nothing was generated."""
    from ofasys.data.members import slot_handler, slot_member

    slot = next(s for side, s in task_data.instruction.templates[0].slots() if side == "output" and s.column == column)
    handler = slot_handler(slot)
    stats = dict(task_data.manifest.get("frame_stats", {}).get(slot_member(slot), {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str | None] = []
    for key, value in zip(keys, values):
        frames = load_frames(value)
        paths.append(None if frames is None else str(handler.save_output(frames, out_dir / key, stats)))
    return paths


def prediction_rows(preds: Sequence[SamplePrediction], column: str, media_dir: Path | None = None) -> list[dict]:
    """One row per sample: its key and the id a user finds it by (`id`: the source's own id column,
    else its row in the source file), where it came from, what each input held (`input.<column>`),
    the scored output (`prediction`: text, a box as 4 floats, a label, the path of a frame output's
    `.npy` in `media_dir`) beside its `reference`, and all decoded outputs as JSON."""
    inputs = sorted({name for p in preds for name in p.inputs})
    rows = []
    for p in preds:
        outputs = save_frames(p.outputs, p.key, media_dir) if media_dir is not None else p.outputs
        rows.append({
            "key": p.key,
            "id": p.row_id,
            "source": p.source.get("source"),
            "source_row": p.source.get("source_row"),
            **{INPUT_PREFIX + name: p.inputs.get(name) for name in inputs},
            "prediction": _arrow_value(outputs.get(column)),
            "reference": _arrow_value(p.refs.get(column)),
            "outputs": json.dumps(outputs, sort_keys=True, default=list),
        })
    return rows


def _media_present(table: pa.Table, media_dir: Path) -> bool:
    """Whether every frame-output file a finished chunk names (a path into `media_dir`) still exists,
    else the chunk is made again; a text output that merely looks like a file name is not one."""
    inside = str(media_dir) + os.sep
    for text in table.column("outputs").to_pylist() if "outputs" in table.column_names else []:
        for value in json.loads(text).values():
            if (isinstance(value, str) and value.startswith(inside) and value.endswith(FRAMES_SUFFIX)
                    and not Path(value).is_file()):
                return False
    return True


def add_column(path: str | os.PathLike, name: str, values: Sequence[Any]) -> None:
    """Rewrite the parquet at `path` with column `name` set to `values` (atomically: temp, then
    rename), e.g. the per-sample `score` once the metric is known."""
    path = Path(path)
    table = pq.read_table(path)
    if name in table.column_names:
        table = table.drop_columns([name])
    table = table.append_column(name, pa.array(list(values)))
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def concat_chunks(tables: Sequence[pa.Table]) -> pa.Table:
    """The chunks' rows as one table. Chunks may type a column differently (a chunk whose detections
    are all empty lists has `list<null>`, another `list<struct<...>>`): types are unified, not refused."""
    if not tables:
        return pa.table({"key": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the library's own source: generation and decoding are code, so a finished chunk made
    by other code (a decoding fix) must not be reused as if it were this code's."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _fingerprint(model: torch.nn.Module, task_data: Any, cfg: BatchInferenceConfig) -> str:
    h = hashlib.sha256(code_fingerprint().encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(Path(task_data.manifest_path).read_bytes())
    h.update(json.dumps([task_data.split, cfg.beam_size, cfg.max_samples, cfg.chunk_size]).encode())
    return h.hexdigest()[:16]


def predict_to_parquet(
    model: torch.nn.Module,
    task_data: Any,
    out_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    cfg: BatchInferenceConfig = BatchInferenceConfig(),
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, list[SamplePrediction]]:
    """Predict every sample of `task_data` into `out_path` (parquet), resuming finished chunks.

    Returns the path and the predictions made by *this* call plus those read back from finished
    chunks (as rows: key/prediction/reference/outputs), so callers can score them. Frame outputs are
    saved as `.npy` files in `<out_path without suffix>/` and named by path (`load_frames` reads them);
    a finished chunk whose files are gone is made again.
    """
    out_path = Path(out_path)
    media = out_path.parent / out_path.stem  # frame outputs' .npy files, beside the table
    column = primary_output(task_data)
    total = len(task_data) if not cfg.max_samples else min(cfg.max_samples, len(task_data))
    parts = Path(work_dir) / f"{task_data.name}-{task_data.split}-{_fingerprint(model, task_data, cfg)}"
    parts.mkdir(parents=True, exist_ok=True)
    tables: list[pa.Table] = []
    for chunk, start in enumerate(range(0, total, cfg.chunk_size)):
        part = parts / f"part-{chunk:06d}.parquet"
        stop = min(start + cfg.chunk_size, total)
        if part.exists():
            table = pq.read_table(part)
            if _media_present(table, media):
                tables.append(table)
                if progress is not None:
                    progress(stop - start)
                continue
        preds = list(predict(model, task_data, beam_size=cfg.beam_size, batch_size=cfg.batch_size,
                             indices=range(start, stop), progress=progress))
        table = pa.Table.from_pylist(prediction_rows(preds, column, media))
        tmp = part.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        tables.append(table)
    table = concat_chunks(tables)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out_path)
    preds = [
        SamplePrediction(key=r["key"], outputs=json.loads(r["outputs"]), refs={column: r["reference"]}, tokens=[],
                         inputs={k[len(INPUT_PREFIX):]: v for k, v in r.items() if k.startswith(INPUT_PREFIX)},
                         # `id` already is the source id, else the source row: it stands for both
                         source={"source": r.get("source"), "source_row": r.get("source_row"), "source_id": r.get("id")})
        for r in table.to_pylist()
    ]
    return out_path, preds
