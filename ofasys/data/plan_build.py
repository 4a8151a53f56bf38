"""Template -> the steps of its `OutputPlan` (see `ofasys.data.plan` for what the steps mean): forced
prompt ids, one `OutputStep` per slot from its modality with the terminator that follows it, and a
`Repeat` for a repeat group, whose start and exit ids must differ."""

from __future__ import annotations

from typing import Any

from ofasys.data.members import slot_handler
from ofasys.data.plan_steps import (
    DEFAULT_MAX_REPEATS,
    MAX_REPEATS,
    Forced,
    PlanError,
    Repeat,
    Step,
    _first_ids,
    _slot_ids,
    _text_ids,
    special_id,
)
from ofasys.instruction.ast import Group, Slot, Special, Text
from ofasys.modalities import Modality

class _Builder:
    """Turns a template's resolved output items into steps (see `OutputPlan.build`)."""

    def __init__(self, template, vocab, closed_sets, arrays, default_max_text, cache, assets):
        self.template, self.vocab, self.closed_sets, self.arrays = template, vocab, closed_sets, arrays
        self.default_max_text, self.cache, self.assets = default_max_text, cache, assets
        self.contexts: dict[str, str] = {}
        self.columns: dict[str, list[str]] = {}
        for _, slot in template.slots():
            if slot.column and slot.column not in self.columns.setdefault(slot.modality, []):
                self.columns[slot.modality].append(slot.column)

    def merge(self, items) -> list[tuple[str, Any]]:
        """("tokens", ids) | ("slot", Slot) | ("group", Group), neighbouring forced tokens joined."""
        seq: list[tuple[str, Any]] = []
        for item in items:
            if isinstance(item, Text):
                ids = _text_ids(self.vocab, self.cache, item.text)
                if ids:
                    seq.append(("tokens", ids))
            elif isinstance(item, Special):
                seq.append(("tokens", (special_id(self.vocab, item),)))
            elif isinstance(item, Slot):
                if item.no_loss:
                    seq.append(("tokens", _slot_ids(item, self.arrays, self.template)))
                else:
                    seq.append(("slot", item))
            elif isinstance(item, Group):
                seq.append(("group", item))
        merged: list[tuple[str, Any]] = []
        for kind, val in seq:
            if kind == "tokens" and merged and merged[-1][0] == "tokens":
                merged[-1] = ("tokens", merged[-1][1] + tuple(val))
            else:
                merged.append((kind, tuple(val) if kind == "tokens" else val))
        return merged

    def steps(self, merged: list[tuple[str, Any]], exit_ids: tuple[int, ...] | None):
        """(steps, handlers). `exit_ids` None: the template's top level (a run at the end stops at
        `<eos>`); else the ids that follow a repetition, where a final run/closed step ends open."""
        steps: list[Step] = []
        handlers: dict[int, Modality] = {}
        i = 0
        while i < len(merged):
            kind, val = merged[i]
            nxt = merged[i + 1] if i + 1 < len(merged) else None
            if kind == "tokens":
                steps.append(Forced(tuple(val)))
                i += 1
                continue
            if kind == "group":
                steps.append(self.repeat(val, nxt))
                i += 1
                continue
            slot: Slot = val
            modality = slot_handler(slot)
            # the terminator is the next forced token (consumed by a run/closed step), <eos> at the end of
            # the template, none at the end of a repetition (the next one, or the group's exit, begins)
            if nxt is None:
                term = self.vocab.eos if exit_ids is None else None
            else:
                term = nxt[1][0] if nxt[0] == "tokens" else None
            try:
                step = modality.output_step(slot.column or "", slot.attrs, self.vocab, terminator=term,
                                            closed_labels=self.closed_sets.get(slot.column or ""),
                                            default_max=self.default_max_text, assets=self.assets)
            except NotImplementedError as exc:
                raise PlanError(f"{exc} (slot at {slot.pos} of {self.template.source!r})") from None
            except ValueError as exc:
                raise PlanError(str(exc)) from None
            handlers[len(steps)] = modality
            steps.append(step)
            for need in modality.needs:
                if len(self.columns.get(need, [])) == 1:
                    self.contexts[slot.column or ""] = self.columns[need][0]
            i += 1
            if step.kind == "fixed" or (term is None and nxt is None):
                continue  # its length ends it (or, last in a repetition, what follows it)
            if term is None:
                raise PlanError(
                    f"the {slot.modality} slot at {slot.pos} of {self.template.source!r} is followed directly by another "
                    f"slot to generate; put <EOS> or prompt text between them so generation knows where it ends"
                )
            if nxt is not None:
                i += 1
                rest = nxt[1][1:]
                if rest:
                    steps.append(Forced(tuple(rest)))
        return steps, handlers

    def repeat(self, group: Group, nxt: tuple[str, Any] | None) -> Repeat:
        """The Repeat step of `group`, given what follows it (its exit: forced ids, or <eos> at the end)."""
        where = f"the repeat group at {group.pos} of {self.template.source!r}"
        if nxt is not None and nxt[0] != "tokens":
            raise PlanError(f"{where} is followed directly by a slot to generate; put <EOS> or prompt text after it "
                            "so generation knows where the list ends")
        exit_ids = (nxt[1][0],) if nxt is not None else (self.vocab.eos,)
        inner = self.merge(group.items)
        steps, handlers = self.steps(inner, exit_ids)
        if not steps:
            raise PlanError(f"{where} generates nothing")
        first = _first_ids(steps[0])
        if set(first) & set(exit_ids):
            raise PlanError(f"{where} may start with the id that ends it ({exit_ids[0]}); begin the group with a slot "
                            "or prompt text")
        last = steps[-1]
        if last.kind in ("run", "closed") and last.terminator is None:
            clash = set(_first_ids(last)) & (set(first) | set(exit_ids))
            if clash:
                raise PlanError(f"{where} ends with a {last.modality} slot whose ids may also start the next "
                                "repetition; start each repetition with another modality (a BOX) or prompt text")
        columns = tuple(s.column for s in steps if s.kind != "forced" and s.column is not None)
        max_count = int(self.assets.get(MAX_REPEATS) or DEFAULT_MAX_REPEATS)
        return Repeat(tuple(steps), tuple(first), exit_ids, max_count, columns, handlers)
