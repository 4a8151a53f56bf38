"""One task's rows -> what the shard writer stores for them, in any process.

`prepare` loads and checks everything a task's materialisation needs once (instruction against every
split's schema, vocabulary, position counting, VQ tokenizer), raising before any row is read.
`RowJob` turns a chunk of raw rows of one split into `RowOutcome`s: the tar records of a kept row
(bytes, ready to append to a shard), its [encoder, decoder] positions and what the manifest sums over rows, or the
reason it was rejected. It holds no state that depends on earlier rows, so chunks can run in worker
processes in any order and be merged in row order (`ofasys.data.materialise`) with output identical to
one process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from ofasys.data.frame_sums import FramePart
from ofasys.data.io import canonical_json, npy_bytes
from ofasys.data.limits import PositionCheck, sample_positions
from ofasys.data.members import REPEAT_LENGTHS, MemberSpec, plan_members
from ofasys.data.provenance import Provenance, data_columns
from ofasys.data.rows import RowMaterialiser, RowRejected
from ofasys.data.shards import encode_sample, sample_key
from ofasys.instruction.ast import Instruction
from ofasys.instruction.errors import InstructionError
from ofasys.vocab import UnifiedVocab

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ofasys.data.materialise_config import MaterialiseConfig

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class TaskSetup:
    """What every row of a task is materialised with, loaded and checked once per process."""

    instruction: Instruction
    members: list[MemberSpec]
    vocab: UnifiedVocab
    check: PositionCheck
    """Counts positions; rejects samples over the model's limit when the config names a model."""
    image_codes: Any = None
    """The VQ tokenizer when a member stores image codes."""
    schemas: Mapping[str, list[str]] = field(default_factory=dict)
    """Per split, the raw parquet's column names."""


def prepare(cfg: "MaterialiseConfig") -> TaskSetup:
    """Parse and check `cfg` against its raw splits and assets; raise (naming the fix) before any row
    is read."""
    instruction, members, schemas = _parse_and_check(cfg)
    vocab = UnifiedVocab.load(cfg.vocab_path)
    if cfg.image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {cfg.image_size}")
    check = _position_check(cfg, instruction, vocab, members)
    image_codes = _image_codes(cfg, members, vocab)
    return TaskSetup(instruction, members, vocab, check, image_codes, schemas)


def _parse_and_check(cfg: "MaterialiseConfig") -> tuple[Instruction, list[MemberSpec], dict[str, list[str]]]:
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


def _position_check(cfg: "MaterialiseConfig", instruction: Instruction, vocab: UnifiedVocab,
                    members: list[MemberSpec]) -> PositionCheck:
    """Positions are always counted (they are the lengths files); the limit only with a model."""
    from ofasys.model.config import ModelConfig

    if cfg.model is None:  # count embedded slots as the adaptors' default settings make them
        return PositionCheck(instruction, vocab, ModelConfig(), enforce=False)
    embedded = sorted({m.modality for m in members if not m.handler.token_run and "input" in m.sides})
    missing = [name for name in embedded if name not in cfg.model.adaptors]
    if missing:
        raise ValueError(f"task {cfg.task!r}: the model has no adaptor for {', '.join(missing)} "
                         f"(model.adaptors has {sorted(cfg.model.adaptors)}); add one to count its positions")
    return PositionCheck(instruction, vocab, cfg.model)


def _image_codes(cfg: "MaterialiseConfig", members: list[MemberSpec], vocab: UnifiedVocab):
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


@dataclass(frozen=True)
class RowOutcome:
    """What one raw row became. Kept: `members` is set; rejected: `column` and `reason` are."""

    row: int
    """The row's index in its raw split."""
    provenance: Provenance
    records: bytes | None = None
    """The sample's tar records (`ofasys.data.shards.encode_sample`), ready to append to a shard."""
    positions: tuple[int, int] = (0, 0)
    """[encoder, decoder] positions: the sample's row of the lengths file."""
    labels: list[tuple[str, str]] = field(default_factory=list)
    """(column, label) of closed-set columns."""
    repeats: int = 0
    """The most repetitions one of the row's repeat groups holds."""
    frames: dict[str, FramePart] = field(default_factory=dict)
    """Per frame-output array, the row's contribution to the manifest's `frame_stats`."""
    column: str = ""
    reason: str = ""

    @property
    def kept(self) -> bool:
        return self.records is not None


@dataclass(frozen=True)
class RowChunk:
    """Consecutive raw rows of one split, `first` being the index of the first."""

    split: str
    first: int
    rows: list[dict[str, Any]]


class RowJob:
    """Materialises chunks of a task's rows (`__call__`); built once per process."""

    def __init__(self, cfg: "MaterialiseConfig", setup: TaskSetup):
        self.cfg, self.setup = cfg, setup
        self.members = setup.members
        self.groups = sorted({m.group for m in self.members if m.group})
        self.frames = {m.name: (m.handler, m.column) for m in self.members
                       if m.handler.frame_output and "output" in m.sides}
        self._materialisers: dict[str, RowMaterialiser] = {}

    def materialiser(self, split: str) -> RowMaterialiser:
        """Relative media paths resolve against the row's source file's directory (C2), else the raw
        parquet's: one materialiser per split."""
        if split not in self._materialisers:
            base = Path(self.cfg.raw_splits[split]).resolve().parent
            self._materialisers[split] = RowMaterialiser(self.members, self.setup.vocab, self.cfg.image_size, base,
                                                         image_codes=self.setup.image_codes)
        return self._materialisers[split]

    def __call__(self, chunk: RowChunk) -> list[RowOutcome]:
        return [self.row(chunk.split, chunk.first + i, values) for i, values in enumerate(chunk.rows)]

    def row(self, split: str, row: int, values: Mapping[str, Any]) -> RowOutcome:
        where = Provenance.of(values)
        try:
            out = self.materialiser(split)(values, key=sample_key(split, row))
            positions = sample_positions(self.setup.check(out.arrays, out.meta))
        except RowRejected as rej:
            return RowOutcome(row, where, column=rej.column, reason=rej.reason)
        info = {
            "task": self.cfg.task,
            "split": split,
            "row": row,
            "lengths": {f"{n}.npy": v for n, v in out.lengths.items()},
            "meta": out.meta,
            "refs": out.refs,
            "inputs": out.inputs,
            "source": asdict(where),
        }
        members = [("json", canonical_json(info).encode("utf-8"))]
        members += [(f"{m.name}.npy", npy_bytes(out.arrays[m.name])) for m in self.members]
        records = encode_sample(sample_key(split, row), members)
        repeats = max((len(out.meta[g[0]][REPEAT_LENGTHS]) for g in self.groups), default=0)
        frames = {name: FramePart.of(handler, out.arrays[name], out.meta.get(column, {}))
                  for name, (handler, column) in self.frames.items()}
        return RowOutcome(row, where, records, positions, list(out.labels), repeats, frames)


__all__ = ["RowChunk", "RowJob", "RowOutcome", "TaskSetup", "prepare"]
