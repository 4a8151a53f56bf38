"""Materialise one task: instruction + raw split parquets + vocab -> WebDataset shards + manifest.

Everything that is the same every epoch (decode, resize, tokenize, box quantisation) happens here,
once per (column, modality), so training only reads arrays. The instruction is parsed and checked
against every split's schema before any work, and every slot the code can't materialise yet is
refused up front, naming the slot: nothing is silently skipped. The parts live in their own modules:
the settings (`materialise_config`), what to store (`members`), one row -> arrays (`rows`), a chunk of
rows -> tar members and positions (`row_job`), worker processes (`row_workers`), the model's length
limit and positions (`limits`), frame statistics (`frame_sums`), where a row came from
(`provenance`); this module runs them over the splits and writes the files.

Output layout in `out_dir` (see contracts, "Shard sample format")::

    <split>-000000.tar ...     samples "<split>-<row:09d>" with .json and .<column>.<modality>.npy
    <split>-lengths.npy        (N, 2) int32 [encoder, decoder] positions per sample, in sample-index
                               order: what the sample occupies in the model (`ofasys.data.limits`),
                               the most under any template; token budgets and bucketing use them
    rejects.jsonl              rows that could not be materialised: split, row, column, reason, and
                               the row's source file, record index and id when the raw data has them
    manifest.json              written last: what exists, with sizes and sha256

A sample the model could not take (encoder sequence or decoder input longer than `max_positions`)
is a rejected row like an undecodable image: it counts against the reject budget, so one over-long
cell can't stop training hours later.

Determinism: rows are merged and written in order, splits in name order, every writer is byte-stable,
so identical inputs give byte-identical files, with any number of worker processes. A rerun first
deletes the manifest, then the files a previous run (possibly killed) left, then writes everything
again. A failed write (disk full) removes everything this run wrote and raises one `OutputWriteError`
naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ofasys.data.frame_sums import FrameSums
from ofasys.data.io import TMP_SUFFIX, OutputWriteError, atomic_write_bytes, npy_bytes, sha256_file, writing
from ofasys.data.manifest import (
    LENGTH_SIDES,
    MANIFEST_NAME,
    REJECTS_NAME,
    build_manifest,
    length_stats,
    lengths_file_name,
    write_manifest,
)
from ofasys.data.materialise_config import MaterialiseConfig, MaterialiseReport, SplitReport
from ofasys.data.members import MemberSpec, UnsupportedSlotError, member_name, plan_members, slot_entry
from ofasys.data.provenance import PROVENANCE_COLUMNS
from ofasys.data.rejects import Reject, RejectBudget, RejectBudgetExceeded, write_rejects
from ofasys.data.row_job import RowChunk, RowJob, RowOutcome, TaskSetup, prepare
from ofasys.data.row_workers import RowWorkers
from ofasys.data.rows import MaterialisedRow, RowMaterialiser, RowRejected, sample_from_row
from ofasys.data.shards import SHARD_RE, ShardWriter

CLOSED_SET_SPLIT = "train"
"""Closed-set labels are collected from this split (from all splits when there is none)."""
CHUNK_ROWS = 64
"""Rows per chunk handed to a worker: large enough to amortise the hand-over, small enough to keep
every worker busy to the end of a split."""
READ_ROWS = 256
"""Rows read from the raw parquet at a time."""


def clean_out_dir(out_dir: Path) -> None:
    """Delete what a previous (maybe killed) run left: the manifest first, so a reader never sees a
    manifest listing files that are being replaced; then shards, lengths files, rejects, temp files.
    Only names this module writes are touched."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if not path.is_file():
            continue
        if (
            SHARD_RE.match(name)
            or name.endswith("-lengths.npy")
            or name == REJECTS_NAME
            or (name.startswith(".") and name.endswith(TMP_SUFFIX))
        ):
            path.unlink()


def image_codes_entry(tokenizer) -> dict[str, Any]:
    """What a manifest records of the VQ tokenizer its codes were made with: the fingerprint (checked
    when codes are decoded), the grid (how many codes an image output is) and its image size."""
    config = tokenizer.config
    return {"fingerprint": tokenizer.fingerprint, "grid": config.grid, "image_size": config.image_size,
            "codebook_size": config.codebook_size}


def _limits(cfg: MaterialiseConfig, members: list[MemberSpec]) -> dict:
    """What samples were checked against, for the manifest: the model's max_positions and the
    settings of the adaptors that embed this task's slots."""
    if cfg.model is None:
        return {"max_positions": None, "adaptors": {}}
    names = sorted({m.modality for m in members} & set(cfg.model.adaptors))
    return {"max_positions": cfg.model.max_positions,
            "adaptors": {n: dict(sorted(vars(cfg.model.adaptor(n)).items())) for n in names}}


def _chunks(cfg: MaterialiseConfig, split: str, columns: list[str], bar: tqdm) -> Iterator[RowChunk]:
    """The split's raw rows ({column: value}) in order, CHUNK_ROWS at a time."""
    pf = pq.ParquetFile(cfg.raw_splits[split])
    row, rows = 0, []
    for batch in pf.iter_batches(batch_size=READ_ROWS, columns=columns):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            rows.append({c: data[c][i] for c in columns})
            if len(rows) == CHUNK_ROWS:
                yield RowChunk(split, row, rows)
                row, rows = row + len(rows), []
        bar.update(batch.num_rows)
    if rows:
        yield RowChunk(split, row, rows)


class _SplitSums:
    """What one split's outcomes add up to, merged in row order: lengths, rejects, labels, the most
    repetitions, frame statistics."""

    def __init__(self, split: str, setup: TaskSetup, labels: dict[str, set[str]] | None):
        self.split, self.labels = split, labels
        self.lengths: list[tuple[int, int]] = []
        self.rejects: list[Reject] = []
        self.rows = 0
        self.max_repeats = 0
        self.frames = {m.name: FrameSums(m.handler, m.column) for m in setup.members
                       if m.handler.frame_output and "output" in m.sides}

    def add(self, outcome: RowOutcome, shards: ShardWriter) -> None:
        self.rows += 1
        if not outcome.kept:
            where = outcome.provenance
            self.rejects.append(Reject(self.split, outcome.row, outcome.column, outcome.reason,
                                       where.source, where.source_row, where.source_id))
            return
        shards.write_encoded(outcome.records)
        self.lengths.append(outcome.positions)
        if self.labels is not None:  # only rows that are kept contribute labels
            for column, label in outcome.labels:
                self.labels.setdefault(column, set()).add(label)
        self.max_repeats = max(self.max_repeats, outcome.repeats)
        for name, part in outcome.frames.items():
            self.frames[name].merge(part)

    def lengths_array(self) -> np.ndarray:
        return np.asarray(self.lengths, dtype=np.int32).reshape(len(self.lengths), len(LENGTH_SIDES))


def materialise_task(cfg: MaterialiseConfig) -> MaterialiseReport:
    """Materialise every split of `cfg`; raise RejectBudgetExceeded (after writing rejects.jsonl, without
    a manifest) when a split rejects more rows than the budget allows, and OutputWriteError (after
    removing what this run wrote) when a file can't be written."""
    setup = prepare(cfg)
    budget = RejectBudget.of(cfg.reject_budget)
    out_dir = Path(cfg.out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    clean_out_dir(out_dir)
    try:
        with RowWorkers(cfg, RowJob(cfg, setup)) as workers:
            return _write_task(cfg, setup, budget, out_dir, workers)
    except OutputWriteError:
        # shards without a manifest do not exist; removing them frees the space a re-run needs
        try:
            clean_out_dir(out_dir)
        except OSError:
            pass
        raise


def _write_task(cfg: MaterialiseConfig, setup: TaskSetup, budget: RejectBudget, out_dir: Path,
                workers: RowWorkers) -> MaterialiseReport:
    members = setup.members
    splits = sorted(cfg.raw_splits)
    label_split = CLOSED_SET_SPLIT if CLOSED_SET_SPLIT in cfg.raw_splits else None
    labels: dict[str, set[str]] = {m.column: set() for m in members if m.closed_set}
    rejects: list[Reject] = []
    reports: dict[str, SplitReport] = {}
    split_entries: dict[str, dict] = {}
    needed = list(dict.fromkeys(m.column for m in members))
    max_repeats: dict[str, int] = {}
    frame_stats: dict[str, dict[str, Any]] = {}

    for split in splits:
        collect = labels if (label_split is None or split == label_split) and labels else None
        sums = _SplitSums(split, setup, collect)
        columns = needed + [c for c in PROVENANCE_COLUMNS if c in setup.schemas[split]]
        total_rows = pq.ParquetFile(cfg.raw_splits[split]).metadata.num_rows
        with ShardWriter(out_dir, split, cfg.shard_samples) as shards, tqdm(
            total=total_rows, desc=f"materialise {cfg.task}/{split}", unit="row", disable=None if cfg.progress else True
        ) as bar:
            for outcomes in workers.map(_chunks(cfg, split, columns, bar)):
                for outcome in outcomes:
                    sums.add(outcome, shards)
        infos = shards.close()
        rejects += sums.rejects
        max_repeats[split] = sums.max_repeats
        if split == (label_split or splits[0]):  # what the frames are normalised by: the train split's
            frame_stats = {name: s.stats() for name, s in sums.frames.items() if s.stats()}
        lengths_arr = sums.lengths_array()
        lengths_path = out_dir / lengths_file_name(split)
        atomic_write_bytes(lengths_path, npy_bytes(lengths_arr))
        reports[split] = SplitReport(split, sums.rows, len(lengths_arr), len(sums.rejects), tuple(infos))
        split_entries[split] = {
            "num_samples": len(lengths_arr),
            "num_rejects": len(sums.rejects),
            "shards": [s.to_json() for s in infos],
            "lengths": length_stats(lengths_arr),
            "lengths_file": lengths_path.name,
            "lengths_sha256": sha256_file(lengths_path),
        }

    rejects_path = out_dir / REJECTS_NAME
    write_rejects(rejects_path, rejects)
    counts = {s: (reports[s].num_rejects, reports[s].num_rows) for s in splits}
    if any(not budget.allows(r, t) for r, t in counts.values()):
        raise RejectBudgetExceeded(cfg.task, counts, budget, str(rejects_path))

    manifest = build_manifest(
        task=cfg.task,
        instruction=cfg.instruction,
        params_hash=cfg.params_hash,
        vocab_fingerprint=setup.vocab.fingerprint,
        image_size=cfg.image_size,
        slots=[slot_entry(m, cfg.image_size) for m in members],
        closed_sets={c: sorted(v) for c, v in labels.items()},
        splits=split_entries,
        rejects_count=len(rejects),
        seed=cfg.seed,
        limits=_limits(cfg, members),
        image_codes=None if setup.image_codes is None else image_codes_entry(setup.image_codes),
        max_repeats=(max_repeats.get(CLOSED_SET_SPLIT, max(max_repeats.values(), default=0))
                     if any(m.group for m in members) else None),
        frame_stats=frame_stats or None,
    )
    manifest_path = out_dir / MANIFEST_NAME
    write_manifest(manifest_path, manifest)
    return MaterialiseReport(cfg.task, manifest_path, rejects_path, reports)


__all__ = [
    "FrameSums",
    "MaterialiseConfig",
    "MaterialiseReport",
    "MaterialisedRow",
    "MemberSpec",
    "OutputWriteError",
    "RejectBudget",
    "RejectBudgetExceeded",
    "RowMaterialiser",
    "RowRejected",
    "sample_from_row",
    "SplitReport",
    "UnsupportedSlotError",
    "clean_out_dir",
    "image_codes_entry",
    "materialise_task",
    "member_name",
    "plan_members",
]
