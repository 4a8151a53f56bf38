"""Materialise one task: instruction + raw split parquets + vocab -> WebDataset shards + manifest.

Everything that is the same every epoch (decode, resize, tokenize, box quantisation) happens here,
once per (column, modality), so training only reads arrays. The instruction is parsed and checked
against every split's schema before any work, and every slot the code can't materialise yet is
refused up front, naming the slot: nothing is silently skipped.

Output layout in `out_dir` (see contracts, "Shard sample format")::

    <split>-000000.tar ...     samples "<split>-<row:09d>" with .json and .<column>.<modality>.npy
    <split>-lengths.npy        int32 total token length per sample, in sample-index order
    rejects.jsonl              rows that could not be materialised, with the reason
    manifest.json              written last: what exists, with sizes and sha256

Determinism: rows are processed in order, splits in name order, every writer is byte-stable, so
identical inputs give byte-identical files. A rerun first deletes the manifest, then the files a
previous run (possibly killed) left, then writes everything again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ofasys.data.io import TMP_SUFFIX, atomic_write_bytes, canonical_json, npy_bytes, sha256_file
from ofasys.data.manifest import (
    MANIFEST_NAME,
    REJECTS_NAME,
    build_manifest,
    length_stats,
    lengths_file_name,
    write_manifest,
)
from ofasys.data.rejects import Reject, RejectBudget, RejectBudgetExceeded, write_rejects
from ofasys.data.shards import SHARD_RE, ShardInfo, ShardWriter, sample_key
from ofasys.instruction.ast import Group, Instruction, Slot, Template
from ofasys.instruction.errors import InstructionError
from ofasys.modalities import ENCODERS, NOT_YET_SUPPORTED, RejectRow, RowContext
from ofasys.vocab import UnifiedVocab

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
CLOSED_SET_SPLIT = "train"
"""Closed-set labels are collected from this split (from all splits when there is none)."""


class UnsupportedSlotError(InstructionError, NotImplementedError):
    """The instruction is valid, but this code can't materialise one of its slots yet."""


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


@dataclass(frozen=True)
class MemberSpec:
    """One stored array: a (column, modality) pair, however many slots use it."""

    column: str
    modality: str
    attrs: Mapping[str, Any]
    """The slot attributes that shape the stored array (identical across the slots using it)."""
    sides: frozenset[str]
    closed_set: bool

    @property
    def name(self) -> str:
        """Sample array key, e.g. "img.image"; the tar member is "<key>.<name>.npy"."""
        return member_name(self.column, self.modality)


def member_name(column: str, modality: str) -> str:
    return f"{column}.{modality.lower()}"


def _unsupported(template: Template, slot: Slot, what: str, fix: str) -> UnsupportedSlotError:
    return UnsupportedSlotError(f"{what} is not yet supported by materialisation", template.source, slot.pos, fix)


def _groups(items) -> list[Group]:
    return [i for i in items if isinstance(i, Group)]


def plan_members(instruction: Instruction) -> list[MemberSpec]:
    """Check every slot can be materialised and list the arrays to store, in first-use order.

    Raises InstructionError (UnsupportedSlotError for valid-but-unsupported slots) at the slot.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for template in instruction.templates:
        for group in _groups(template.inputs) + _groups(template.outputs):
            raise UnsupportedSlotError(
                "repeat groups '( ... )*' are not yet supported by materialisation",
                template.source,
                group.pos,
                "write the list-valued columns as one text column, or drop the group from this task",
            )
        for side, slot in template.slots():
            mod = slot.modality
            if mod in NOT_YET_SUPPORTED or mod not in ENCODERS:
                raise _unsupported(template, slot, f"modality {mod}", f"use TEXT, IMAGE, BOX or CATEGORY slots; {mod} is planned")
            pre = slot.attrs.get("preprocess")
            if pre not in (None, "default") and not (mod == "IMAGE" and pre == "image_resnet"):
                raise _unsupported(template, slot, f"{mod} with preprocess={pre}", "remove preprocess= (the default is supported)")
            if mod == "IMAGE" and side == "output":
                raise _unsupported(template, slot, "generating an IMAGE", "IMAGE slots are supported on the input side only")
            if mod == "IMAGE" and slot.attrs.get("mask_ratio"):
                raise _unsupported(template, slot, "mask_ratio on an IMAGE", "remove mask_ratio from the IMAGE slot")
            if slot.column is None:
                raise InstructionError(
                    f"this {mod} slot names no column, so there is nothing to materialise",
                    template.source,
                    slot.pos,
                    f"bind it to a column of the data, e.g. [{mod}:<column>]",
                )
            encoder = ENCODERS[mod]
            attrs = {k: slot.attrs[k] for k in encoder.materialise_attrs if k in slot.attrs and k != "preprocess"}
            key = (slot.column, mod)
            if key not in found:
                found[key] = {"attrs": attrs, "sides": {side}, "closed": slot.closed_set, "where": (template, slot)}
                continue
            entry = found[key]
            if entry["attrs"] != attrs:
                raise InstructionError(
                    f"column '{slot.column}' is used as {mod} twice with different {sorted(encoder.materialise_attrs)}: "
                    f"{entry['attrs']} here vs {attrs}",
                    template.source,
                    slot.pos,
                    "a column is stored once per modality; give both slots the same uncased/no_punctuation/max_length",
                )
            entry["sides"].add(side)
            entry["closed"] |= slot.closed_set
    members = [
        MemberSpec(col, mod, dict(e["attrs"]), frozenset(e["sides"]), bool(e["closed"])) for (col, mod), e in found.items()
    ]
    images = [m for m in members if m.modality == "IMAGE"]
    boxes = [m for m in members if m.modality == "BOX"]
    if boxes and len(images) != 1:
        template, slot = found[(boxes[0].column, "BOX")]["where"]
        raise InstructionError(
            f"a BOX is in pixels of its image, so the instruction needs exactly one IMAGE column "
            f"(it has {len(images)}: {[m.column for m in images]})",
            template.source,
            slot.pos,
            "use one [IMAGE:<column>] slot for the image the boxes refer to",
        )
    return members


def _slot_entry(member: MemberSpec, image_size: int) -> dict:
    encoder = ENCODERS[member.modality]
    side = "both" if len(member.sides) == 2 else next(iter(member.sides))
    return {
        "column": member.column,
        "modality": member.modality,
        "member": f"{member.name}.npy",
        "dtype": encoder.dtype,
        "shape": encoder.shape(image_size),
        "side": side,
        "attrs": dict(member.attrs, **({"closed_set": True} if member.closed_set else {})),
    }


def template_members(instruction: Instruction) -> list[list[str]]:
    """Per template, the member name of each slot occurrence (for total token lengths)."""
    return [[member_name(s.column, s.modality) for _, s in t.slots() if s.column] for t in instruction.templates]


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


def _parse_and_check(cfg: MaterialiseConfig) -> tuple[Instruction, list[MemberSpec]]:
    from ofasys.instruction import parse_instruction

    instruction = parse_instruction(cfg.instruction)
    members = plan_members(instruction)
    if not cfg.raw_splits:
        raise ValueError(f"task {cfg.task!r}: no splits given")
    for split, path in sorted(cfg.raw_splits.items()):
        if not _SPLIT_RE.match(split):
            raise ValueError(f"split name {split!r} must match [A-Za-z0-9_]+ (it names shard files)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"task {cfg.task!r}, split {split!r}: raw file {path} does not exist")
        names = pq.read_schema(path).names
        try:
            instruction.check_columns(names)
        except InstructionError as exc:
            exc.message = f"{exc.message} (split {split!r}, {path})"
            exc.args = (exc.message, exc.template, exc.column, exc.fix)
            raise
    return instruction, members


class RowRejected(ValueError):
    """A row can't be materialised: `column` and a deterministic `reason`."""

    def __init__(self, column: str, reason: str):
        super().__init__(f"column '{column}': {reason}")
        self.column, self.reason = column, reason


@dataclass
class MaterialisedRow:
    arrays: dict[str, np.ndarray]
    """Keyed by member name ("img.image")."""
    meta: dict[str, dict]
    refs: dict[str, Any]
    lengths: dict[str, int]
    """Token length per member name."""
    labels: list[tuple[str, str]]
    """(column, normalised label) of closed_set columns."""


class RowMaterialiser:
    """Turns one raw row into the arrays of `members` (shared by the shard writer and inference)."""

    def __init__(self, members: list[MemberSpec], vocab: UnifiedVocab, image_size: int, base_dir: Path | None = None):
        self.members, self.vocab, self.image_size, self.base_dir = members, vocab, image_size, base_dir
        # images first: boxes need their image's original size
        self.order = sorted(members, key=lambda m: m.modality != "IMAGE")
        images = [m.column for m in members if m.modality == "IMAGE"]
        self.box_image = images[0] if len(images) == 1 else None
        self.output_columns = {m.column for m in members if "output" in m.sides}

    def __call__(self, values: Mapping[str, Any]) -> MaterialisedRow:
        """Materialise `values` ({column: raw value}); raise RowRejected at the first bad column."""
        ctx = RowContext(self.vocab, self.image_size, self.base_dir, box_image_column=self.box_image)
        out = MaterialisedRow({}, {}, {}, {}, [])
        for m in self.order:
            encoder = ENCODERS[m.modality]
            try:
                if m.column not in values:
                    raise RejectRow(f"no value for column '{m.column}'")
                res = encoder.materialise(values[m.column], m.attrs, ctx)
            except RejectRow as exc:
                raise RowRejected(m.column, exc.reason) from None
            out.arrays[m.name] = res.array
            out.lengths[m.name] = encoder.token_length(res.array)
            if res.meta:
                out.meta.setdefault(m.column, {}).update(res.meta)
                if m.modality == "IMAGE":
                    ctx.image_sizes[m.column] = (int(res.meta["width"]), int(res.meta["height"]))
            if m.column in self.output_columns and res.ref is not None:
                out.refs[m.column] = res.ref
            if m.closed_set:
                out.labels.append((m.column, encoder.normalise(values[m.column], m.attrs)))
        return out


def sample_from_row(
    instruction: Instruction | str,
    values: Mapping[str, Any],
    vocab: UnifiedVocab,
    *,
    image_size: int = 64,
    task: str = "",
    key: str = "infer-000000000",
    sides: tuple[str, ...] = ("input",),
    base_dir: Path | None = None,
):
    """Materialise one raw row in memory for inference: the columns of the slots on `sides` (outputs
    are to be generated, so by default only inputs are needed). Returns a `Sample`; raises
    InstructionError for unsupported slots and RowRejected for a bad value."""
    from ofasys.data.collate import Sample
    from ofasys.instruction import parse_instruction

    if isinstance(instruction, str):
        instruction = parse_instruction(instruction)
    members = [m for m in plan_members(instruction) if m.sides & set(sides)]
    row = RowMaterialiser(members, vocab, image_size, base_dir)(values)
    meta = {"task": task, "split": key.split("-")[0], "row": 0, "lengths": {f"{n}.npy": v for n, v in row.lengths.items()},
            "meta": row.meta, "refs": row.refs}
    return Sample(key, meta, row.arrays)


class _SplitWriter:
    """Materialise the rows of one split, in order, into tar members."""

    def __init__(self, cfg: MaterialiseConfig, vocab: UnifiedVocab, members: list[MemberSpec], tmpl_members: list[list[str]], split: str):
        self.cfg, self.members, self.split = cfg, members, split
        self.tmpl_members = tmpl_members
        self.materialise = RowMaterialiser(members, vocab, cfg.image_size, Path(cfg.raw_splits[split]).resolve().parent)

    def row(self, row: int, values: Mapping[str, Any], labels: dict[str, set[str]] | None):
        """(members for the tar, total length) or raise RowRejected."""
        out = self.materialise(values)
        if labels is not None:  # only rows that are kept contribute labels
            for column, label in out.labels:
                labels.setdefault(column, set()).add(label)
        total = max((sum(out.lengths[n] for n in names) for names in self.tmpl_members), default=0)
        info = {
            "task": self.cfg.task,
            "split": self.split,
            "row": row,
            "lengths": {f"{n}.npy": v for n, v in out.lengths.items()},
            "meta": out.meta,
            "refs": out.refs,
        }
        tar_members = [("json", canonical_json(info).encode("utf-8"))]
        tar_members += [(f"{m.name}.npy", npy_bytes(out.arrays[m.name])) for m in self.members]
        return tar_members, total


def materialise_task(cfg: MaterialiseConfig) -> MaterialiseReport:
    """Materialise every split of `cfg`; raise RejectBudgetExceeded (after writing rejects.jsonl, without
    a manifest) when a split rejects more rows than the budget allows."""
    instruction, members = _parse_and_check(cfg)
    budget = RejectBudget.of(cfg.reject_budget)
    vocab = UnifiedVocab.load(cfg.vocab_path)
    if cfg.image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {cfg.image_size}")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_out_dir(out_dir)

    tmpl_members = template_members(instruction)
    splits = sorted(cfg.raw_splits)
    label_split = CLOSED_SET_SPLIT if CLOSED_SET_SPLIT in cfg.raw_splits else None
    labels: dict[str, set[str]] = {m.column: set() for m in members if m.closed_set}
    rejects: list[Reject] = []
    reports: dict[str, SplitReport] = {}
    split_entries: dict[str, dict] = {}
    needed = list(dict.fromkeys(m.column for m in members))

    for split in splits:
        writer = _SplitWriter(cfg, vocab, members, tmpl_members, split)
        collect = labels if (label_split is None or split == label_split) and labels else None
        pf = pq.ParquetFile(cfg.raw_splits[split])
        total_rows = pf.metadata.num_rows
        lengths: list[int] = []
        n_rejects = 0
        row = 0
        with ShardWriter(out_dir, split, cfg.shard_samples) as shards, tqdm(
            total=total_rows, desc=f"materialise {cfg.task}/{split}", unit="row", disable=None if cfg.progress else True
        ) as bar:
            for batch in pf.iter_batches(batch_size=256, columns=needed):
                data = batch.to_pydict()
                for i in range(batch.num_rows):
                    values = {c: data[c][i] for c in needed}
                    try:
                        tar_members, total = writer.row(row, values, collect)
                    except RowRejected as rej:
                        rejects.append(Reject(split, row, rej.column, rej.reason))
                        n_rejects += 1
                    else:
                        shards.write(sample_key(split, row), tar_members)
                        lengths.append(total)
                    row += 1
                bar.update(batch.num_rows)
        infos = shards.close()
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
        slots=[_slot_entry(m, cfg.image_size) for m in members],
        closed_sets={c: sorted(v) for c, v in labels.items()},
        splits=split_entries,
        rejects_count=len(rejects),
        seed=cfg.seed,
    )
    manifest_path = out_dir / MANIFEST_NAME
    write_manifest(manifest_path, manifest)
    return MaterialiseReport(cfg.task, manifest_path, rejects_path, reports)


__all__ = [
    "MaterialiseConfig",
    "MaterialiseReport",
    "MemberSpec",
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
