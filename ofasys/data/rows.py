"""One raw row -> the arrays of its task's members, in memory (shared by shard writing and inference).

Columns run in dependency order: a modality's `needs` first (a BOX is quantised against its image's
original size, so IMAGE columns run before BOX columns). The first
column that can't be materialised rejects the row with a deterministic reason (`RowRejected`), which
the shard writer records in rejects.jsonl and inference raises to the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofasys.data.members import REPEAT_LENGTHS, MemberSpec, plan_members
from ofasys.data.provenance import SOURCE, MediaBase
from ofasys.instruction.ast import Instruction
from ofasys.modalities import MODALITIES, RejectRow, RowContext
from ofasys.vocab import UnifiedVocab


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
    inputs: dict[str, str]
    """What each input column held, for people reading predictions (`input_display`)."""


MAX_DISPLAY = 500
"""Characters of an input value kept for display in predictions (a path, a question, a table's JSON)."""


def input_display(value: Any) -> str:
    """A raw input value as a person reads it beside a prediction: text (cut at MAX_DISPLAY), a media
    file's path as written in the data, or `<N bytes>` for bytes cells."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_DISPLAY else text[:MAX_DISPLAY] + "..."


class RowMaterialiser:
    """Turns one raw row into the arrays of `members` (shared by the shard writer and inference)."""

    def __init__(self, members: list[MemberSpec], vocab: UnifiedVocab, image_size: int, base_dir: Path | None = None,
                 seed: int = 0, image_codes: Any = None):
        self.members, self.vocab, self.image_size, self.base_dir, self.seed = members, vocab, image_size, base_dir, seed
        self.image_codes = image_codes
        """The VQ tokenizer for IMAGE slots with preprocess=image_vqgan (`ofasys.vq.VQTokenizer`)."""
        self.media_base = MediaBase(base_dir)
        needed = {need for m in members for need in MODALITIES[m.modality].needs}
        # what others need first (stable otherwise): a BOX reads its image's original size
        self.order = sorted(members, key=lambda m: m.modality not in needed)
        self.columns: dict[str, list[str]] = {}
        for m in members:
            self.columns.setdefault(m.modality, []).append(m.column)
        self.output_columns = {m.column for m in members if "output" in m.sides}
        self.input_columns = sorted({m.column for m in members if "input" in m.sides})

    def __call__(self, values: Mapping[str, Any], key: str = "") -> MaterialisedRow:
        """Materialise `values` ({column: raw value}); raise RowRejected at the first bad column.

        Relative media paths resolve against the directory of the row's `__source__` file when it
        has one (contracts C2), else against `base_dir`. `key` names the row for modalities that draw
        random numbers at materialisation."""
        base_dir = self.media_base(values.get(SOURCE))
        ctx = RowContext(self.vocab, self.image_size, base_dir, columns=self.columns, seed=self.seed, key=key,
                         image_codes=self.image_codes)
        out = MaterialisedRow({}, {}, {}, {}, [], {})
        for m in self.order:
            modality = m.handler
            try:
                if m.column not in values:
                    raise RejectRow(f"no value for column '{m.column}'")
                if m.group:
                    self._repeated(m, values[m.column], ctx, out)
                    continue
                res = modality.materialise(values[m.column], m.attrs, ctx)
            except RejectRow as exc:
                raise RowRejected(m.column, exc.reason) from None
            out.arrays[m.name] = res.array
            out.lengths[m.name] = modality.token_length(res.array)
            if res.meta:
                out.meta.setdefault(m.column, {}).update(res.meta)
                ctx.meta.setdefault(m.column, {}).update(res.meta)
            if m.column in self.output_columns and res.ref is not None:
                out.refs[m.column] = res.ref
            if m.closed_set:
                out.labels.append((m.column, modality.label(values[m.column], m.attrs)))
        self._check_groups(out)
        out.inputs = {c: input_display(values[c]) for c in self.input_columns if c in values}
        return out

    def _repeated(self, m: MemberSpec, value: Any, ctx: RowContext, out: MaterialisedRow) -> None:
        """A repeat-group column: each element materialised as its modality does, the runs stored as
        one array with each element's length in meta (`REPEAT_LENGTHS`), the refs as a list."""
        modality = m.handler
        arrays, refs = [], []
        for i, element in enumerate(list_value(value)):
            try:
                res = modality.materialise(element, m.attrs, ctx)
            except RejectRow as exc:
                raise RejectRow(f"element {i}: {exc.reason}") from None
            arrays.append(np.asarray(res.array))
            refs.append(res.ref)
            if m.closed_set:
                out.labels.append((m.column, modality.label(element, m.attrs)))
        array = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.dtype(modality.dtype))
        out.arrays[m.name] = array
        out.lengths[m.name] = int(sum(modality.token_length(a) for a in arrays))
        out.meta.setdefault(m.column, {})[REPEAT_LENGTHS] = [int(len(a)) for a in arrays]
        if m.column in self.output_columns:
            out.refs[m.column] = refs

    def _check_groups(self, out: MaterialisedRow) -> None:
        """Every column of a repeat group must hold as many elements as the others (an object needs a
        box and a label): a row where they differ is rejected, naming the counts."""
        for group in {m.group for m in self.members if m.group}:
            counts = {c: len(out.meta.get(c, {}).get(REPEAT_LENGTHS, [])) for c in group}
            if len(set(counts.values())) > 1:
                shown = ", ".join(f"{c} {n}" for c, n in counts.items())
                raise RowRejected(group[0], f"the repeat group's columns hold different numbers of elements ({shown}); "
                                            "each repetition needs one value of each")
            if group[0] in out.refs:  # the reference objects, as generation decodes them (see ofasys.data.plan)
                out.refs[group[0]] = [dict(zip(group, values)) for values in zip(*(out.refs[c] for c in group))]


def list_value(value: Any) -> list:
    """A repeat-group cell as a list: a list, tuple or 1-D array, or JSON text of a list (CSV sources)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise RejectRow("a repeat-group cell holds text that is not a JSON list") from None
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None or (isinstance(value, float) and value != value):
        raise RejectRow("missing list (a repeat-group column needs a list, [] for none)")
    raise RejectRow(f"a repeat-group column needs a list of values, one per repetition, got {type(value).__name__}")


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
    image_codes: Any = None,
):
    """Materialise one raw row in memory for inference: the columns of the slots on `sides` (outputs
    are to be generated, so by default only inputs are needed). Relative image paths resolve against
    the directory of the row's `__source__` when it has one, else against `base_dir` (else the working
    directory). Returns a `Sample`; raises InstructionError for unsupported slots and RowRejected for
    a bad value."""
    from ofasys.data.collate import Sample
    from ofasys.instruction import parse_instruction

    if isinstance(instruction, str):
        instruction = parse_instruction(instruction)
    members = [m for m in plan_members(instruction) if m.sides & set(sides)]
    row = RowMaterialiser(members, vocab, image_size, base_dir, image_codes=image_codes)(values)
    meta = {"task": task, "split": key.split("-")[0], "row": 0, "lengths": {f"{n}.npy": v for n, v in row.lengths.items()},
            "meta": row.meta, "refs": row.refs, "inputs": row.inputs}
    return Sample(key, meta, row.arrays)


__all__ = ["MaterialisedRow", "RowMaterialiser", "RowRejected", "sample_from_row"]
