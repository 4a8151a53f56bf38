"""OutputPlan: what the decoder may generate after its forced prefix, step by step, and how to read it.

The template's output side is a sequence of items; at inference everything up to the first slot to
generate is the forced prefix (`<bos>` + prompt text, + the sample's own `no_loss` slots), and the
rest becomes steps:

- forced: prompt text, specials, or a `no_loss` slot's known ids, emitted as they are;
- a slot's `OutputStep`, from its modality (`Modality.output_step`), in one of three shapes:
  "run" (ids from a range until the terminator, at most `max_length`, at least `min_length`: TEXT),
  "fixed" (exactly `length` ids from a range: BOX's 4 bins), "closed" (a path through a trie of the
  closed set's label ids, then the terminator: CATEGORY, closed-set TEXT).

The terminator of a run/closed step is the first token of whatever follows it in the template, so
a trailing `<EOS>` is consumed by the slot it ends (that is what a model trained on
`<bos> ids <eos>` emits). `generated` never includes the forced prefix. Decoding a slot's ids into
its typed value is its modality's `decode_output`, given the meta of the column it `needs` (BOX:
its image's original size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ofasys.instruction.ast import Group, Slot, Special, Template, Text
from ofasys.data.members import slot_handler, slot_member
from ofasys.modalities import MODALITIES, NO_ASSETS, Modality, OutputStep
from ofasys.vocab import UnifiedVocab

DEFAULT_MAX_TEXT_TOKENS = 64
"""Generation cap for a TEXT output without `max_length` when nothing better is known."""


class PlanError(ValueError):
    """The template's output side can't be generated as a plan (e.g. two slots with no separator)."""


@dataclass(frozen=True)
class Forced:
    """Ids the plan emits as they are (prompt text, specials, a `no_loss` slot's own ids)."""

    tokens: tuple[int, ...]
    kind: str = "forced"
    column: str | None = None


Step = Forced | OutputStep


def _text_ids(vocab: UnifiedVocab, cache: dict[str, tuple[int, ...]], text: str) -> tuple[int, ...]:
    if text not in cache:
        cache[text] = tuple(vocab.encode_text(text)) if text.strip() else ()
    return cache[text]


def special_id(vocab: UnifiedVocab, item: Special) -> int:
    return vocab.bos if item.name == "BOS" else vocab.eos


class OutputPlan:
    """Constraint + decoder for one sample's generated ids (see module doc)."""

    def __init__(
        self,
        steps: Sequence[Step],
        vocab: UnifiedVocab,
        prefix: Sequence[int],
        contexts: Mapping[str, str] | None = None,
        handlers: Mapping[int, Modality] | None = None,
    ):
        self.steps = tuple(steps)
        self.handlers = dict(handlers or {})
        """Step index -> the modality object that decodes it, where it is a variant (IMAGE codes)."""
        self.vocab = vocab
        self.prefix = tuple(int(t) for t in prefix)
        """The forced prefix (`<bos>` first) that goes into decoder_input at inference."""
        self.contexts = dict(contexts or {})
        """Output column -> the column whose meta its decoding needs (a BOX's image)."""
        self._allowed: dict[Any, tuple[int, ...]] = {}
        self._with_term: dict[tuple[Any, int | None], tuple[int, ...]] = {}
        total = 0
        for s in self.steps:
            if s.kind == "forced":
                total += len(s.tokens)
            elif s.kind == "run":
                total += s.max_length + 1
            elif s.kind == "fixed":
                total += s.length
            elif s.kind == "closed":
                total += s.trie.depth() + 1
        self.max_new_tokens = total

    # ----- building -------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        template: Template,
        vocab: UnifiedVocab,
        closed_sets: Mapping[str, Sequence[str]] | None = None,
        *,
        arrays: Mapping[str, Any] | None = None,
        default_max_text: int = DEFAULT_MAX_TEXT_TOKENS,
        text_cache: dict[str, tuple[int, ...]] | None = None,
        assets: Mapping[str, Any] = NO_ASSETS,
    ) -> "OutputPlan":
        """Plan for `template`'s output side. `arrays` (a sample's arrays, keyed "<column>.<modality>")
        supplies `no_loss` slots' ids; `closed_sets` the labels of `closed_set` slots; `assets` what
        the run's assets fix (the VQ grid an image output is generated on)."""
        closed_sets = closed_sets or {}
        cache = text_cache if text_cache is not None else {}
        items = list(template.resolved_outputs())
        # a list of ("tokens", ids) | ("slot", Slot)
        seq: list[tuple[str, Any]] = []
        for item in items:
            if isinstance(item, Text):
                ids = _text_ids(vocab, cache, item.text)
                if ids:
                    seq.append(("tokens", ids))
            elif isinstance(item, Special):
                seq.append(("tokens", (special_id(vocab, item),)))
            elif isinstance(item, Slot):
                if item.no_loss:
                    seq.append(("tokens", _slot_ids(item, arrays, template)))
                else:
                    seq.append(("slot", item))
            elif isinstance(item, Group):
                raise PlanError(f"repeat groups are not yet supported in generation (at {item.pos} of {template.source!r})")
        # flatten neighbouring forced tokens
        merged: list[tuple[str, Any]] = []
        for kind, val in seq:
            if kind == "tokens" and merged and merged[-1][0] == "tokens":
                merged[-1] = ("tokens", merged[-1][1] + tuple(val))
            else:
                merged.append((kind, tuple(val) if kind == "tokens" else val))
        # forced prefix = everything before the first slot to generate, starting with <bos>
        prefix: tuple[int, ...] = ()
        if merged and merged[0][0] == "tokens":
            prefix = merged.pop(0)[1]
        if not prefix or prefix[0] != vocab.bos:
            prefix = (vocab.bos,) + prefix
        columns: dict[str, list[str]] = {}
        for _, slot in template.slots():
            if slot.column and slot.column not in columns.setdefault(slot.modality, []):
                columns[slot.modality].append(slot.column)
        steps: list[Step] = []
        contexts: dict[str, str] = {}
        handlers: dict[int, Modality] = {}
        i = 0
        while i < len(merged):
            kind, val = merged[i]
            nxt = merged[i + 1] if i + 1 < len(merged) else None
            if kind == "tokens":
                steps.append(Forced(tuple(val)))
                i += 1
                continue
            slot: Slot = val
            modality = slot_handler(slot)
            # the terminator is the next forced token (consumed by a run/closed step), or <eos> at the end
            term = vocab.eos if nxt is None else (nxt[1][0] if nxt[0] == "tokens" else None)
            try:
                step = modality.output_step(slot.column or "", slot.attrs, vocab, terminator=term,
                                            closed_labels=closed_sets.get(slot.column or ""),
                                            default_max=default_max_text, assets=assets)
            except NotImplementedError as exc:
                raise PlanError(f"{exc} (slot at {slot.pos} of {template.source!r})") from None
            except ValueError as exc:
                raise PlanError(str(exc)) from None
            handlers[len(steps)] = modality
            steps.append(step)
            for need in modality.needs:
                if len(columns.get(need, [])) == 1:
                    contexts[slot.column or ""] = columns[need][0]
            i += 1
            if step.kind == "fixed":
                continue  # its length ends it; what follows stays a step of its own
            if term is None:
                raise PlanError(
                    f"the {slot.modality} slot at {slot.pos} of {template.source!r} is followed directly by another slot "
                    f"to generate; put <EOS> or prompt text between them so generation knows where it ends"
                )
            if nxt is not None:
                i += 1
                rest = nxt[1][1:]
                if rest:
                    steps.append(Forced(tuple(rest)))
        return cls(steps, vocab, prefix, contexts, handlers)

    def _range(self, allowed: range | tuple[int, ...]) -> tuple[int, ...]:
        cached = self._allowed.get(allowed)  # ranges hash by value
        if cached is None:
            cached = self._allowed[allowed] = tuple(allowed)
        return cached

    def _run_choices(self, step: OutputStep) -> tuple[int, ...]:
        """The run's ids plus its terminator (cached: the search asks at every step)."""
        key = (step.allowed, step.terminator)
        cached = self._with_term.get(key)
        if cached is None:
            ids = self._range(step.allowed)
            cached = ids if step.terminator in step.allowed else ids + (step.terminator,)
            self._with_term[key] = cached
        return cached

    # ----- walking --------------------------------------------------------------------------------
    def _walk(self, generated: Sequence[int]):
        """Consume `generated`: returns (finished, allowed-next, {step index: ids}) .

        Raises ValueError when `generated` leaves the plan."""
        pos = 0
        n = len(generated)
        outputs: dict[int, list[int]] = {}
        for k, step in enumerate(self.steps):
            if step.kind == "forced":
                for t in step.tokens:
                    if pos == n:
                        return False, [t], outputs
                    if int(generated[pos]) != t:
                        raise ValueError(f"generated id {generated[pos]} at {pos}, the plan forces {t}")
                    pos += 1
            elif step.kind == "fixed":
                ids = outputs.setdefault(k, [])
                for _ in range(step.length):
                    if pos == n:
                        return False, self._range(step.allowed), outputs
                    t = int(generated[pos])
                    if t not in step.allowed:
                        raise ValueError(f"generated id {t} at {pos} is not allowed in '{step.column}' ({step.modality})")
                    ids.append(t)
                    pos += 1
            elif step.kind == "run":
                ids = outputs.setdefault(k, [])
                while True:
                    if pos == n:
                        may_end = len(ids) >= step.min_length or len(ids) >= step.max_length
                        if len(ids) >= step.max_length:
                            return False, (step.terminator,), outputs
                        return False, self._run_choices(step) if may_end else self._range(step.allowed), outputs
                    t = int(generated[pos])
                    pos += 1
                    if t == step.terminator and (len(ids) >= step.min_length or len(ids) >= step.max_length):
                        break
                    if t not in step.allowed or len(ids) >= step.max_length:
                        raise ValueError(f"generated id {t} at {pos - 1} is not allowed in the text of '{step.column}'")
                    ids.append(t)
            elif step.kind == "closed":
                ids = outputs.setdefault(k, [])
                node = step.trie
                while True:
                    if pos == n:
                        nxt = sorted(node.children)
                        return False, nxt + ([step.terminator] if node.end else []), outputs
                    t = int(generated[pos])
                    pos += 1
                    if node.end and t == step.terminator:
                        break
                    if t not in node.children:
                        raise ValueError(f"generated id {t} at {pos - 1} is not in the closed set of '{step.column}'")
                    ids.append(t)
                    node = node.children[t]
        return True, [], outputs

    def allowed(self, generated: Sequence[int]) -> Sequence[int] | None:
        """Ids allowed next (the `<eos>` id once the plan is complete)."""
        finished, allowed, _ = self._walk(generated)
        return [self.vocab.eos] if finished else allowed

    def done(self, generated: Sequence[int]) -> bool:
        try:
            return self._walk(generated)[0]
        except ValueError:
            return True

    def decode(self, generated: Sequence[int], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """{column: value} for every generated slot, typed by its modality's `decode_output` (TEXT ->
        str, BOX -> [x0, y0, x1, y1] in the original image's pixels or None when incomplete). `meta`
        is the sample json (or its "meta"): a BOX needs {its image column: {"width", "height"}}.
        Tolerates a trailing `<eos>` and truncation."""
        generated = list(generated)
        try:
            _, _, outputs = self._walk(generated)
        except ValueError:
            # keep what is valid: decode the longest valid prefix
            lo = 0
            while lo < len(generated):
                try:
                    self._walk(generated[: lo + 1])
                except ValueError:
                    break
                lo += 1
            _, _, outputs = self._walk(generated[:lo])
        meta = meta or {}
        if isinstance(meta.get("meta"), Mapping):
            meta = meta["meta"]
        result: dict[str, Any] = {}
        for k, step in enumerate(self.steps):
            if step.kind == "forced" or step.column is None:
                continue
            context_column = self.contexts.get(step.column)
            context = meta.get(context_column, {}) if context_column else {}
            handler = self.handlers.get(k) or MODALITIES[step.modality]
            result[step.column] = handler.decode_output(outputs.get(k, []), self.vocab, context)
        return result


def _slot_ids(slot: Slot, arrays: Mapping[str, Any] | None, template: Template) -> tuple[int, ...]:
    key = slot_member(slot)
    if arrays is None or key not in arrays:
        raise PlanError(
            f"the no_loss slot '{slot.column}' at {slot.pos} of {template.source!r} is forced from the sample, "
            f"but the sample has no '{key}' array"
        )
    return tuple(int(t) for t in arrays[key])
