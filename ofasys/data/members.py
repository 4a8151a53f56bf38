"""What a task stores: the (column, modality) arrays its instruction needs, checked up front.

`plan_members` walks every slot of every template once, refuses what materialisation can't do yet
(naming the slot, with a caret), and lists each stored array once however many slots use it, so
that a column shared by input and output (e.g. infilling) is tokenized once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ofasys.instruction.ast import Group, Instruction, Slot, Special, Template, Text
from ofasys.instruction.errors import InstructionError, NotSupportedYetError
from ofasys.modalities import MODALITIES, Modality


REPEAT_LENGTHS = "repeat_lengths"
"""Meta key of a repeat-group column: the token length of each element, in order (how collation and
generation split the stored run back into repetitions)."""


class UnsupportedSlotError(NotSupportedYetError):
    """The instruction is valid, but this code can't materialise one of its slots yet."""


@dataclass(frozen=True)
class MemberSpec:
    """One stored array: a (column, modality) pair, however many slots use it."""

    column: str
    modality: str
    attrs: Mapping[str, Any]
    """The slot attributes that shape the stored array (identical across the slots using it)."""
    sides: frozenset[str]
    closed_set: bool
    preprocess: str | None = None
    """The slots' `preprocess=` (picks the modality's variant: IMAGE pixels or VQ codes)."""
    group: tuple[str, ...] | None = None
    """The columns of the repeat group `( ... )*` this column is in, or None: each of them holds a
    list, one element per repetition (an object's box and its label), all of equal length."""

    @property
    def handler(self) -> Modality:
        """The modality object that materialises and reads this array (`Modality.variant`)."""
        return MODALITIES[self.modality].variant(self.preprocess)

    @property
    def name(self) -> str:
        """Sample array key, e.g. "img.image"; the tar member is "<key>.<name>.npy"."""
        return member_name(self.column, self.modality, self.preprocess)


def member_name(column: str, modality: str, preprocess: str | None = None) -> str:
    """"<column>.<tag>": the tag is the modality's, or its variant's ("img.image_codes")."""
    return f"{column}.{MODALITIES[modality].variant(preprocess).tag}"


def slot_handler(slot: Slot) -> Modality:
    """The modality object that handles `slot` (its variant for the slot's `preprocess=`)."""
    return MODALITIES[slot.modality].variant(slot.attrs.get("preprocess"))


def output_fields(template: Template) -> dict[str, str | None]:
    """Output column -> the typed field its decoded value is (`text`, `box`, `image`, ...): a repeat
    group's first column is its `objects` (one dict per repetition), its other columns `list`s."""
    fields: dict[str, str | None] = {}
    for i, item in enumerate(template.outputs):
        if isinstance(item, Group):
            slots = [s for s in item.items if isinstance(s, Slot) and s.column]
            for k, slot in enumerate(slots):
                fields[slot.column] = "objects" if k == 0 else "list"
        elif isinstance(item, Slot):
            fields[item.column or f"output{i}"] = slot_handler(item).output_field
    return fields


def slot_member(slot: Slot) -> str:
    """The sample array a slot reads ("<column>.<tag>")."""
    return member_name(slot.column or "", slot.modality, slot.attrs.get("preprocess"))


def _unsupported(template: Template, slot: Slot, what: str, fix: str) -> UnsupportedSlotError:
    return UnsupportedSlotError(f"{what} is not supported yet by materialisation", template.source, slot.pos, fix)


def _groups(items) -> list[Group]:
    return [i for i in items if isinstance(i, Group)]


def _group_columns(template: Template) -> dict[int, tuple[str, ...]]:
    """id(slot) -> the columns of its repeat group, for every slot in a group of `template`, after
    checking the groups can be materialised: on the output side, not nested, of token slots only
    (each repetition is a run of vocabulary ids: an object's 4 bins and its label)."""
    for group in _groups(template.inputs):
        raise UnsupportedSlotError(
            "repeat groups '( ... )*' on the input side are not supported yet by materialisation",
            template.source,
            group.pos,
            "write the list as one text column on the input side (e.g. joined with ' ; ')",
        )
    found: dict[int, tuple[str, ...]] = {}
    for group in _groups(template.outputs):
        if _groups(group.items):
            raise UnsupportedSlotError("a repeat group inside a repeat group is not supported yet by materialisation",
                                       template.source, _groups(group.items)[0].pos,
                                       "flatten the inner group into the outer one")
        slots = [i for i in group.items if isinstance(i, Slot)]
        if not slots or any(s.column is None for s in slots):
            raise InstructionError("each slot of a repeat group must name its list column, and a group needs one",
                                   template.source, group.pos, "e.g. ( [BOX:boxes] [TEXT:labels] )*")
        for slot in slots:
            if not slot_handler(slot).token_run:
                raise _unsupported(template, slot, f"an embedded {slot.modality} slot in a repeat group",
                                   "repeat groups hold token slots (TEXT, BOX, CATEGORY, PHONE, ...)")
            if slot.no_loss:
                raise _unsupported(template, slot, "a no_loss slot in a repeat group", "remove no_loss")
        columns = tuple(s.column for s in slots)
        if len(set(columns)) != len(columns):
            raise InstructionError("a repeat group uses a column twice", template.source, group.pos,
                                   "bind each slot of the group to its own list column")
        for slot in slots:
            found[id(slot)] = columns
    return found


def _check_frame_ends(template: Template) -> None:
    """A frame output must be followed by a token the model learns to stop with (`<EOS>` or prompt
    text): frames take no automatic `<EOS>`, and without one the model would never learn to stop."""
    items = template.resolved_outputs()
    for i, item in enumerate(items):
        if isinstance(item, Slot) and slot_handler(item).frame_output:
            nxt = items[i + 1] if i + 1 < len(items) else None
            if not (isinstance(nxt, Special) or (isinstance(nxt, Text) and nxt.text.strip())):
                raise InstructionError(
                    f"nothing follows this {item.modality} output, so the model could not learn where it stops",
                    template.source, item.pos, f"write <EOS> after it: [{item.modality}:{item.column}] <EOS>")


def _supported() -> list[str]:
    return [name for name, m in MODALITIES.items() if m.status is None]


def plan_members(instruction: Instruction) -> list[MemberSpec]:
    """Check every slot can be materialised and list the arrays to store, in first-use order.

    Raises InstructionError (UnsupportedSlotError for valid-but-unsupported slots) at the slot.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for template in instruction.templates:
        in_group = _group_columns(template)
        frame_slots = [s for side, s in template.slots() if side == "output" and slot_handler(s).frame_output]
        if len(frame_slots) > 1:
            raise _unsupported(template, frame_slots[1], "a second frame output (MOTION, speech) in one template",
                               "generate one of them per task")
        _check_frame_ends(template)
        for side, slot in template.slots():
            mod = slot.modality
            modality = MODALITIES[mod]
            handler = slot_handler(slot)
            if modality.status is not None:
                raise _unsupported(template, slot, f"modality {mod}",
                                   f"{mod} is {modality.status}; supported: {', '.join(_supported())}")
            pre = slot.attrs.get("preprocess")
            if pre not in (None, "default") and modality.preprocess.get(pre) is not None:
                raise _unsupported(template, slot, f"{mod} with preprocess={pre}",
                                   f"{modality.preprocess[pre]}; remove preprocess= (the default is supported)")
            if side == "output" and not handler.token_run and not handler.frame_output:
                generated = [p for p in modality.preprocess if modality.variant(p).frame_output]
                raise _unsupported(template, slot, f"generating {mod}" + (f" with preprocess={pre}" if pre else ""),
                                   f"write preprocess={generated[0]} on the output slot" if generated else
                                   f"{mod} slots are supported on the input side only")
            if side == "input" and not handler.input_side:
                raise InstructionError(f"{mod} with preprocess={pre} is what the model generates, not what it reads",
                                       template.source, slot.pos, "remove preprocess= from the input slot")
            if not modality.is_token_run(pre) and slot.attrs.get("mask_ratio"):
                raise _unsupported(template, slot, f"mask_ratio on {mod}", f"remove mask_ratio from the {mod} slot")
            if slot.column is None:
                raise InstructionError(
                    f"this {mod} slot names no column, so there is nothing to materialise",
                    template.source,
                    slot.pos,
                    f"bind it to a column of the data, e.g. [{mod}:<column>]",
                )
            attrs = {k: slot.attrs[k] for k in handler.materialise_attrs if k in slot.attrs}
            key = (slot.column, mod, handler.tag)
            group = in_group.get(id(slot))
            if key not in found:
                found[key] = {"attrs": attrs, "sides": {side}, "closed": slot.closed_set, "where": (template, slot),
                              "preprocess": pre, "group": group}
                continue
            entry = found[key]
            if entry["group"] != group:
                raise InstructionError(
                    f"column '{slot.column}' is used inside a repeat group and outside one (or in two groups): a "
                    "column holds either one value or a list of one value per repetition",
                    template.source,
                    slot.pos,
                    "use the list column only inside its group, and another column for a single value",
                )
            if entry["attrs"] != attrs:
                raise InstructionError(
                    f"column '{slot.column}' is used as {mod} twice with different {sorted(handler.materialise_attrs)}: "
                    f"{entry['attrs']} here vs {attrs}",
                    template.source,
                    slot.pos,
                    "a column is stored once per modality; give both slots the same uncased/no_punctuation/max_length",
                )
            entry["sides"].add(side)
            entry["closed"] |= slot.closed_set
    members = [
        MemberSpec(col, mod, dict(e["attrs"]), frozenset(e["sides"]), bool(e["closed"]), e["preprocess"], e["group"])
        for (col, mod, _), e in found.items()
    ]
    for (column, mod, _), entry in found.items():
        for need in MODALITIES[mod].needs:
            have = sorted({m.column for m in members if m.modality == need})
            if len(have) != 1:
                template, slot = entry["where"]
                raise InstructionError(
                    f"a {mod} slot refers to the task's {need} column, so the instruction needs exactly one "
                    f"{need} column (it has {len(have)}: {have})",
                    template.source,
                    slot.pos,
                    MODALITIES[mod].needs_fix,
                )
    return members


def slot_entry(member: MemberSpec, image_size: int) -> dict:
    """The manifest's description of one stored array (readers check shards against it)."""
    modality = member.handler
    side = "both" if len(member.sides) == 2 else next(iter(member.sides))
    return {
        "column": member.column,
        "modality": member.modality,
        "member": f"{member.name}.npy",
        "dtype": modality.dtype,
        "shape": modality.stored_shape(image_size, member.attrs),
        "side": side,
        "attrs": dict(member.attrs, **({"closed_set": True} if member.closed_set else {})),
        **({"group": list(member.group)} if member.group else {}),
    }


def template_members(instruction: Instruction) -> list[list[str]]:
    """Per template, the member name of each slot occurrence (for total token lengths)."""
    return [[slot_member(s) for _, s in t.slots() if s.column] for t in instruction.templates]


__all__ = ["MemberSpec", "UnsupportedSlotError", "member_name", "plan_members", "slot_entry", "slot_handler",
           "slot_member", "template_members"]
