"""Materialise one task: instruction + raw split parquets + vocab -> WebDataset shards + manifest.

Everything that is the same every epoch (decode, resize, tokenize, box quantisation) happens here,
once per (column, modality), so training only reads arrays. The instruction is parsed and checked
against every split's schema before any work, and every slot the code can't materialise yet is
refused up front, naming the slot: nothing is silently skipped. The parts live in their own modules:
what to store (`members`), one row -> arrays (`rows`), the model's length limit (`limits`), where a
row came from (`provenance`); this module runs them over the splits and writes the files.

Output layout in `out_dir` (see contracts, "Shard sample format")::

    <split>-000000.tar ...     samples "<split>-<row:09d>" with .json and .<column>.<modality>.npy
    <split>-lengths.npy        int32 total token length per sample, in sample-index order
    rejects.jsonl              rows that could not be materialised: split, row, column, reason, and
                               the row's source file, record index and id when the raw data has them
    manifest.json              written last: what exists, with sizes and sha256

A sample the model could not take (encoder sequence or decoder input longer than `max_positions`)
is a rejected row like an undecodable image: it counts against the reject budget, so one over-long
cell can't stop training hours later.

Determinism: rows are processed in order, splits in name order, every writer is byte-stable, so
identical inputs give byte-identical files. A rerun first deletes the manifest, then the files a
previous run (possibly killed) left, then writes everything again. A failed write (disk full) removes
everything this run wrote and raises one `OutputWriteError` naming the file and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ofasys.data.io import TMP_SUFFIX, OutputWriteError, atomic_write_bytes, canonical_json, npy_bytes, sha256_file, writing
from ofasys.data.limits import PositionCheck
from ofasys.data.manifest import (
    MANIFEST_NAME,
    REJECTS_NAME,
    build_manifest,
    length_stats,
    lengths_file_name,
    write_manifest,
)
from ofasys.data.members import (
    REPEAT_LENGTHS,
    MemberSpec,
    UnsupportedSlotError,
    member_name,
    plan_members,
    slot_entry,
    template_members,
)
from ofasys.data.provenance import PROVENANCE_COLUMNS, Provenance, data_columns
from ofasys.data.rejects import Reject, RejectBudget, RejectBudgetExceeded, write_rejects
from ofasys.data.rows import MaterialisedRow, RowMaterialiser, RowRejected, sample_from_row
from ofasys.data.shards import SHARD_RE, ShardInfo, ShardWriter, sample_key
from ofasys.instruction.ast import Instruction
from ofasys.instruction.errors import InstructionError
from ofasys.vocab import UnifiedVocab

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ofasys.model.config import ModelConfig

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
CLOSED_SET_SPLIT = "train"
"""Closed-set labels are collected from this split (from all splits when there is none)."""


@dataclass(frozen=True)
class MaterialiseConfig:
    task: str
    """Task name, recorded in every sample and the manifest."""
    instruction: str
    """The task's instruction (one or more `|||`-separated templates)."""
    raw_splits: Mapping[str, str | os.PathLike]
    """Split name -> raw parquet path (e.g. {"train": "data/raw/caption/train.parquet"})."""
    vocab_path: str | os.PathLike
    """The unified vocabulary JSON (`UnifiedVocab.save`)."""
    out_dir: str | os.PathLike
    """Directory receiving shards, lengths files, rejects.jsonl and manifest.json."""
    image_size: int = 64
    """Square resolution IMAGE columns are resized to."""
    shard_samples: int = 1000
    """Samples per shard."""
    reject_budget: RejectBudget | float | int = field(default_factory=RejectBudget)
    """Largest share of a split's rows that may be rejected (a fraction, a count, or both)."""
    params_hash: str = ""
    """Hash of the params that produced this task (recorded in the manifest for provenance)."""
    seed: int = 0
    """Recorded in the manifest; seeds evaluation-time masking so evaluation is reproducible."""
    progress: bool = True
    """Show a tqdm bar per split (only on a terminal)."""
    image_codes_path: str | os.PathLike | None = None
    """The VQ image tokenizer file (`ofasys.vq.save_vq`) that IMAGE slots with
    `preprocess=image_vqgan` are encoded with; its fingerprint and grid go into the manifest."""
    model: "ModelConfig | None" = None
    """The model that will train on the shards: a sample whose encoder sequence or decoder input
    would be longer than its `max_positions` under any template (embedded slots counted as its
    adaptors embed them) is rejected, with the fix in the reason (see `ofasys.data.limits`). None
    skips the check (the model then refuses such a sample when a batch draws it)."""


@dataclass(frozen=True)
class SplitReport:
    split: str
    num_rows: int
    num_samples: int
    num_rejects: int
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class MaterialiseReport:
    task: str
    manifest_path: Path
    rejects_path: Path
    splits: Mapping[str, SplitReport]

    def __str__(self) -> str:
        parts = [
            f"{s.split} {s.num_samples}/{s.num_rows} rows kept ({s.num_rejects} rejected) in {len(s.shards)} shard(s)"
            for s in self.splits.values()
        ]
        return f"{'; '.join(parts)} -> {self.manifest_path}"


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


def _parse_and_check(cfg: MaterialiseConfig) -> tuple[Instruction, list[MemberSpec], dict[str, list[str]]]:
    """The instruction, its members and, per split, the raw parquet's column names; every split's
    data columns (provenance columns are not data) are checked against the instruction."""
    from ofasys.instruction import parse_instruction

    instruction = parse_instruction(cfg.instruction)
    members = plan_members(instruction)
    if not cfg.raw_splits:
        raise ValueError(f"task {cfg.task!r}: no splits given")
    schemas: dict[str, list[str]] = {}
    for split, path in sorted(cfg.raw_splits.items()):
        if not _SPLIT_RE.match(split):
            raise ValueError(f"split name {split!r} must match [A-Za-z0-9_]+ (it names shard files)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"task {cfg.task!r}, split {split!r}: raw file {path} does not exist")
        schemas[split] = names = pq.read_schema(path).names
        try:
            instruction.check_columns(data_columns(names))
        except InstructionError as exc:
            exc.message = f"{exc.message} (split {split!r}, {path})"
            exc.args = (exc.message, exc.template, exc.column, exc.fix)
            raise
    return instruction, members, schemas


def _position_check(cfg: MaterialiseConfig, instruction: Instruction, vocab: UnifiedVocab,
                    members: list[MemberSpec]) -> PositionCheck | None:
    if cfg.model is None:
        return None
    embedded = sorted({m.modality for m in members if not m.handler.token_run and "input" in m.sides})
    missing = [name for name in embedded if name not in cfg.model.adaptors]
    if missing:
        raise ValueError(f"task {cfg.task!r}: the model has no adaptor for {', '.join(missing)} "
                         f"(model.adaptors has {sorted(cfg.model.adaptors)}); add one to count its positions")
    return PositionCheck(instruction, vocab, cfg.model)


def _image_codes(cfg: MaterialiseConfig, members: list[MemberSpec], vocab: UnifiedVocab):
    """The VQ tokenizer when a member stores image codes (None otherwise), checked against the
    vocabulary's code block before any row is read."""
    if not any(m.handler.vocab_block == "codes" for m in members):
        return None
    from ofasys.vq import load_vq

    if cfg.image_codes_path is None:
        raise ValueError(f"task {cfg.task!r} stores images as VQ codes (preprocess=image_vqgan) but no VQ tokenizer "
                         "file was given; run `dvc repro vq` (assets.vq in params) first")
    tokenizer = load_vq(cfg.image_codes_path)
    if tokenizer.config.codebook_size != vocab.num_codes:
        raise ValueError(f"task {cfg.task!r}: the VQ tokenizer has {tokenizer.config.codebook_size} codes but the "
                         f"vocabulary's code block {vocab.num_codes}; set assets.num_codes to "
                         f"{tokenizer.config.codebook_size} and rebuild the vocabulary")
    return tokenizer


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


class _SplitWriter:
    """Materialise the rows of one split, in order, into tar members."""

    def __init__(
        self,
        cfg: MaterialiseConfig,
        vocab: UnifiedVocab,
        members: list[MemberSpec],
        tmpl_members: list[list[str]],
        split: str,
        check: PositionCheck | None,
        image_codes: Any = None,
    ):
        self.cfg, self.members, self.split, self.check = cfg, members, split, check
        self.tmpl_members = tmpl_members
        # relative media paths: the row's source file's directory (C2), else the raw parquet's
        self.materialise = RowMaterialiser(members, vocab, cfg.image_size, Path(cfg.raw_splits[split]).resolve().parent,
                                           image_codes=image_codes)
        self.groups = sorted({m.group for m in members if m.group})
        self.max_repeats = 0
        """The most repetitions a kept row's repeat group holds (the manifest's generation cap)."""
        self.frames = {m.name: FrameSums(m.handler, m.column) for m in members
                       if m.handler.frame_output and "output" in m.sides}
        """Per frame-output array, the sums its statistics are made of (the manifest's `frame_stats`)."""

    def row(self, row: int, values: Mapping[str, Any], labels: dict[str, set[str]] | None):
        """(members for the tar, total length) or raise RowRejected."""
        out = self.materialise(values, key=sample_key(self.split, row))
        if self.check is not None:
            self.check(out.arrays, out.meta)
        if labels is not None:  # only rows that are kept contribute labels
            for column, label in out.labels:
                labels.setdefault(column, set()).add(label)
        for group in self.groups:
            self.max_repeats = max(self.max_repeats, len(out.meta[group[0]][REPEAT_LENGTHS]))
        for name, sums in self.frames.items():
            sums.add(out.arrays[name], out.meta.get(sums.column, {}))
        total = max((sum(out.lengths[n] for n in names) for names in self.tmpl_members), default=0)
        info = {
            "task": self.cfg.task,
            "split": self.split,
            "row": row,
            "lengths": {f"{n}.npy": v for n, v in out.lengths.items()},
            "meta": out.meta,
            "refs": out.refs,
            "inputs": out.inputs,
            "source": asdict(Provenance.of(values)),
        }
        tar_members = [("json", canonical_json(info).encode("utf-8"))]
        tar_members += [(f"{m.name}.npy", npy_bytes(out.arrays[m.name])) for m in self.members]
        return tar_members, total


class FrameSums:
    """Running sums over one frame-output array's rows, in row order (float64: the same figures on every
    machine), for the per-feature mean and std the model's frame targets are normalised by."""

    STD_FLOOR = 1e-3
    """The smallest std recorded: a feature constant over the train split (a padding column) is left
    as it is rather than blown up."""

    def __init__(self, handler: Any, column: str):
        self.handler, self.column = handler, column
        self.count = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.max_steps = 0
        self.seconds: list[float] = []

    def add(self, array: np.ndarray, meta: Mapping[str, Any]) -> None:
        """One kept row's stored array, and its column's meta (a clip's `frame_seconds`)."""
        if meta.get("frame_seconds"):
            self.seconds.append(float(meta["frame_seconds"]))
        rows = np.asarray(array, np.float64)
        if self.total is None:
            self.total, self.squares = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
        self.count += rows.shape[0]
        self.total += rows.sum(0)
        self.squares += (rows * rows).sum(0)
        self.max_steps = max(self.max_steps, self.handler.frame_steps(array))

    def stats(self) -> dict[str, Any] | None:
        """{"mean", "std", "max_steps"} rounded to 6 decimals, or None when no row was kept."""
        if not self.count:
            return None
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean * mean, 0.0))
        stats = {"mean": [round(float(x), 6) for x in mean],
                 "std": [round(float(x), 6) for x in np.maximum(std, self.STD_FLOOR)],
                 "max_steps": int(self.max_steps)}
        if self.seconds:  # how long a generated frame lasts (a motion clip's playback rate)
            stats["frame_seconds"] = round(float(np.median(self.seconds)), 6)
        return stats


def materialise_task(cfg: MaterialiseConfig) -> MaterialiseReport:
    """Materialise every split of `cfg`; raise RejectBudgetExceeded (after writing rejects.jsonl, without
    a manifest) when a split rejects more rows than the budget allows, and OutputWriteError (after
    removing what this run wrote) when a file can't be written."""
    instruction, members, schemas = _parse_and_check(cfg)
    budget = RejectBudget.of(cfg.reject_budget)
    vocab = UnifiedVocab.load(cfg.vocab_path)
    if cfg.image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {cfg.image_size}")
    check = _position_check(cfg, instruction, vocab, members)
    image_codes = _image_codes(cfg, members, vocab)
    out_dir = Path(cfg.out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    clean_out_dir(out_dir)
    try:
        return _write_task(cfg, instruction, members, schemas, vocab, budget, check, out_dir, image_codes)
    except OutputWriteError:
        # shards without a manifest do not exist; removing them frees the space a re-run needs
        try:
            clean_out_dir(out_dir)
        except OSError:
            pass
        raise


def _write_task(
    cfg: MaterialiseConfig,
    instruction: Instruction,
    members: list[MemberSpec],
    schemas: Mapping[str, list[str]],
    vocab: UnifiedVocab,
    budget: RejectBudget,
    check: PositionCheck | None,
    out_dir: Path,
    image_codes: Any = None,
) -> MaterialiseReport:
    tmpl_members = template_members(instruction)
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
        writer = _SplitWriter(cfg, vocab, members, tmpl_members, split, check, image_codes)
        collect = labels if (label_split is None or split == label_split) and labels else None
        columns = needed + [c for c in PROVENANCE_COLUMNS if c in schemas[split]]
        pf = pq.ParquetFile(cfg.raw_splits[split])
        total_rows = pf.metadata.num_rows
        lengths: list[int] = []
        n_rejects = 0
        row = 0
        with ShardWriter(out_dir, split, cfg.shard_samples) as shards, tqdm(
            total=total_rows, desc=f"materialise {cfg.task}/{split}", unit="row", disable=None if cfg.progress else True
        ) as bar:
            for batch in pf.iter_batches(batch_size=256, columns=columns):
                data = batch.to_pydict()
                for i in range(batch.num_rows):
                    values = {c: data[c][i] for c in columns}
                    try:
                        tar_members, total = writer.row(row, values, collect)
                    except RowRejected as rej:
                        where = Provenance.of(values)
                        rejects.append(
                            Reject(split, row, rej.column, rej.reason, where.source, where.source_row, where.source_id)
                        )
                        n_rejects += 1
                    else:
                        shards.write(sample_key(split, row), tar_members)
                        lengths.append(total)
                    row += 1
                bar.update(batch.num_rows)
        infos = shards.close()
        max_repeats[split] = writer.max_repeats
        if split == (label_split or splits[0]):  # what the frames are normalised by: the train split's
            frame_stats = {name: sums.stats() for name, sums in writer.frames.items() if sums.stats()}
        lengths_arr = np.asarray(lengths, dtype=np.int32)
        lengths_path = out_dir / lengths_file_name(split)
        atomic_write_bytes(lengths_path, npy_bytes(lengths_arr))
        reports[split] = SplitReport(split, row, len(lengths), n_rejects, tuple(infos))
        split_entries[split] = {
            "num_samples": len(lengths),
            "num_rejects": n_rejects,
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
        vocab_fingerprint=vocab.fingerprint,
        image_size=cfg.image_size,
        slots=[slot_entry(m, cfg.image_size) for m in members],
        closed_sets={c: sorted(v) for c, v in labels.items()},
        splits=split_entries,
        rejects_count=len(rejects),
        seed=cfg.seed,
        limits=_limits(cfg, members),
        image_codes=None if image_codes is None else image_codes_entry(image_codes),
        max_repeats=(max_repeats.get(CLOSED_SET_SPLIT, max(max_repeats.values(), default=0))
                     if any(m.group for m in members) else None),
        frame_stats=frame_stats or None,
    )
    manifest_path = out_dir / MANIFEST_NAME
    write_manifest(manifest_path, manifest)
    return MaterialiseReport(cfg.task, manifest_path, rejects_path, reports)


__all__ = [
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
    "materialise_task",
    "member_name",
    "plan_members",
]
