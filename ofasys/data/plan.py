"""OutputPlan: what the decoder may generate after its forced prefix, step by step, and how to read it.

The template's output side is a sequence of items; at inference everything up to the first slot to
generate is the forced prefix (`<bos>` + prompt text, + the sample's own `no_loss` slots), and the
rest becomes steps:

- forced: prompt text, specials, or a `no_loss` slot's known ids, emitted as they are;
- a slot's `OutputStep`, from its modality (`Modality.output_step`), in one of three shapes:
  "run" (ids from a range until the terminator, at most `max_length`, at least `min_length`: TEXT),
  "fixed" (exactly `length` ids from a range: BOX's 4 bins), "closed" (a path through a trie of the
  closed set's label ids, then the terminator: CATEGORY, closed-set TEXT), or "frames" (a frame
  output's `<mask>` placeholders until the terminator: their count is the output's length, their
  states the model's output head makes frames of; see `ofasys.generation.frames`).

The terminator of a run/closed step is the first token of whatever follows it in the template, so
a trailing `<EOS>` is consumed by the slot it ends (that is what a model trained on
`<bos> ids <eos>` emits). `generated` never includes the forced prefix. Decoding a slot's ids into
its typed value is its modality's `decode_output`, given the meta of the column it `needs` (BOX:
its image's original size).

A repeat group `( ... )*` is a `Repeat` step: its items' steps once per repetition, any number of
times up to `max_count`; before each repetition the decoder may start another (the first ids of the
repetition) or leave the group (the ids that may follow it, e.g. `<eos>`), so the two must differ. A
run or closed slot at the end of a repetition has no terminator of its own: it ends where the next
repetition or the group's exit begins (an object's label ends at the next box's first bin). A group
decodes to one list per column, and, under its first column, to objects: one dict per repetition with
every column's value (and a `score` when the tokens' log-probabilities are given).

The search walks a plan one id at a time through its cursor (`start`, `advance`, `mask_id`,
`mask_parts`; see `ofasys.data.plan_cursor`), in O(1) per id. `allowed` and `done` replay the whole
output through `_walk`, the reference the cursor is tested against; `decode` runs once per output.
"""


from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ofasys.data.plan_build import _Builder
from ofasys.data.plan_cursor import PlanCursor, PlanState
from ofasys.data.plan_steps import (  # noqa: F401 - re-exported: the plan's public vocabulary
    DEFAULT_MAX_REPEATS,
    DEFAULT_MAX_TEXT_TOKENS,
    MAX_REPEATS,
    SPAN,
    Forced,
    PlanError,
    Repeat,
    Step,
    _max_tokens,
    special_id,
)
from ofasys.instruction.ast import Template
from ofasys.modalities import MODALITIES, NO_ASSETS, Modality, OutputStep
from ofasys.vocab import UnifiedVocab


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
        self.vocab = vocab
        self.prefix = tuple(int(t) for t in prefix)
        """The forced prefix (`<bos>` first) that goes into decoder_input at inference."""
        self.contexts = dict(contexts or {})
        """Output column -> the column whose meta its decoding needs (a BOX's image)."""
        self.handlers = dict(handlers or {})
        """Step index -> the modality object that decodes it, where it is a variant (IMAGE codes)."""
        self._allowed: dict[Any, tuple[int, ...]] = {}
        self._with_term: dict[tuple[Any, int | None], tuple[int, ...]] = {}
        self.max_new_tokens = _max_tokens(self.steps)
        self._cursor: PlanCursor | None = None

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
        the run's assets fix (the VQ grid an image output is generated on, a group's largest count)."""
        builder = _Builder(template, vocab, closed_sets or {}, arrays, default_max_text,
                           text_cache if text_cache is not None else {}, assets)
        merged = builder.merge(template.resolved_outputs())
        # forced prefix = everything before the first slot to generate, starting with <bos>
        prefix: tuple[int, ...] = ()
        if merged and merged[0][0] == "tokens":
            prefix = merged.pop(0)[1]
        if not prefix or prefix[0] != vocab.bos:
            prefix = (vocab.bos,) + prefix
        steps, handlers = builder.steps(merged, exit_ids=None)
        return cls(steps, vocab, prefix, builder.contexts, handlers)

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
        complete, _, allowed, outputs = self._walk_steps(self.steps, generated, 0, ())
        return complete, allowed, outputs

    def _walk_steps(self, steps: Sequence[Step], generated: Sequence[int], pos: int, follow: tuple[int, ...]):
        """Walk `steps` from `pos`: (complete, position after, allowed next when incomplete, outputs).
        `follow`: the ids that end an open run/closed step (one without a terminator) without being
        consumed: inside a repetition, what may come after it."""
        n = len(generated)
        outputs: dict[int, Any] = {}
        for k, step in enumerate(steps):
            if step.kind == "forced":
                for t in step.tokens:
                    if pos == n:
                        return False, pos, [t], outputs
                    if int(generated[pos]) != t:
                        raise ValueError(f"generated id {generated[pos]} at {pos}, the plan forces {t}")
                    pos += 1
            elif step.kind == "fixed":
                ids = outputs.setdefault(k, [])
                for _ in range(step.length):
                    if pos == n:
                        return False, pos, self._range(step.allowed), outputs
                    t = int(generated[pos])
                    if t not in step.allowed:
                        raise ValueError(f"generated id {t} at {pos} is not allowed in '{step.column}' ({step.modality})")
                    ids.append(t)
                    pos += 1
            elif step.kind in ("run", "frames"):  # a frame output's placeholders: kept as their positions
                ids = outputs.setdefault(k, [])
                open_end = step.terminator is None
                while True:
                    may_end = len(ids) >= step.min_length or len(ids) >= step.max_length
                    if pos == n:
                        ends = follow if open_end else (step.terminator,)
                        if len(ids) >= step.max_length:
                            return False, pos, ends, outputs
                        if not may_end:
                            return False, pos, self._range(step.allowed), outputs
                        return False, pos, (self._range(step.allowed) + tuple(follow) if open_end
                                            else self._run_choices(step)), outputs
                    t = int(generated[pos])
                    if may_end and open_end and t in follow:
                        break  # the next repetition or the group's exit begins: not consumed here
                    pos += 1
                    if may_end and not open_end and t == step.terminator:
                        break
                    if t not in step.allowed or len(ids) >= step.max_length:
                        raise ValueError(f"generated id {t} at {pos - 1} is not allowed in the text of '{step.column}'")
                    ids.append(t if step.kind == "run" else pos - 1)
            elif step.kind == "closed":
                ids = outputs.setdefault(k, [])
                open_end = step.terminator is None
                node = step.trie
                while True:
                    if pos == n:
                        ends = (list(follow) if open_end else [step.terminator]) if node.end else []
                        return False, pos, sorted(node.children) + ends, outputs
                    t = int(generated[pos])
                    if node.end and open_end and t in follow:
                        break
                    pos += 1
                    if node.end and not open_end and t == step.terminator:
                        break
                    if t not in node.children:
                        raise ValueError(f"generated id {t} at {pos - 1} is not in the closed set of '{step.column}'")
                    ids.append(t)
                    node = node.children[t]
            elif step.kind == "repeat":
                reps = outputs.setdefault(k, [])
                while True:
                    if pos == n:
                        return False, pos, (step.first + step.exit if len(reps) < step.max_count else step.exit), outputs
                    t = int(generated[pos])
                    if t in step.exit:
                        break  # what follows the group consumes it
                    if len(reps) >= step.max_count or t not in step.first:
                        raise ValueError(f"generated id {t} at {pos} neither starts another repetition of "
                                         f"({', '.join(step.columns)}) nor ends the group")
                    start = pos
                    complete, pos, allowed, rep = self._walk_steps(step.steps, generated, pos, step.first + step.exit)
                    if not complete:
                        return False, pos, allowed, outputs
                    rep[SPAN] = (start, pos)
                    reps.append(rep)
        return True, pos, [], outputs

    def __getstate__(self) -> dict[str, Any]:
        # the cursor names steps and trie nodes by identity: a copy builds its own
        return {**self.__dict__, "_cursor": None}

    # ----- incremental walking (the search's constraint) ---------------------------------------
    @property
    def cursor(self) -> PlanCursor:
        """The plan walked one token at a time (see `ofasys.data.plan_cursor`), built on first use."""
        if self._cursor is None:
            self._cursor = PlanCursor(self.steps, self.vocab.eos)
        return self._cursor

    def start(self) -> PlanState:
        """The state before any generated id: `state.done`, `mask_id(state)`, `advance(state, id)`."""
        return self.cursor.start()

    def advance(self, state: PlanState, token: int) -> PlanState:
        """The state after one more id, without replaying the ones before (O(1) amortised)."""
        return self.cursor.advance(state, token)

    def mask_id(self, state: PlanState) -> int:
        """Index in `mask_parts()` of the ids allowed next at `state` (what `allowed` returns there)."""
        return state.mask

    def mask_parts(self):
        """Every allowed-id set this plan may ask for, by mask id (see `PlanCursor.mask_parts`)."""
        return self.cursor.mask_parts()

    def allowed(self, generated: Sequence[int]) -> Sequence[int] | None:
        """Ids allowed next (the `<eos>` id once the plan is complete)."""
        finished, allowed, _ = self._walk(generated)
        return [self.vocab.eos] if finished else allowed

    def done(self, generated: Sequence[int]) -> bool:
        try:
            return self._walk(generated)[0]
        except ValueError:
            return True

    def frame_output(self, generated: Sequence[int]) -> tuple[OutputStep, Modality, list[int]] | None:
        """(the frame output's step, its modality's handler, the positions in `generated` of its
        placeholders), or None when the plan has no frame output. Generation cut inside the
        placeholders keeps those it made."""
        k = next((i for i, step in enumerate(self.steps) if step.kind == "frames"), None)
        if k is None:
            return None
        generated = list(generated)
        for n in range(len(generated), -1, -1):  # the longest prefix that stays in the plan
            try:
                _, _, outputs = self._walk(generated[:n])
                break
            except ValueError:
                continue
        return self.steps[k], self.handlers.get(k) or MODALITIES[self.steps[k].modality], list(outputs.get(k, []))

    def decode(self, generated: Sequence[int], meta: Mapping[str, Any] | None = None,
               logprobs: Sequence[float] | None = None, frames: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """{column: value} for every generated slot, typed by its modality's `decode_output` (TEXT ->
        str, BOX -> [x0, y0, x1, y1] in the original image's pixels or None when incomplete). `meta`
        is the sample json (or its "meta"): a BOX needs {its image column: {"width", "height"}}.
        A repeat group gives each column's list, and under its first column the objects (see module
        doc), each scored by the mean `logprobs` (one per generated id) of its ids, as a probability.
        Tolerates a trailing `<eos>` and truncation (a repetition cut short is left out). The search
        returns ids without the `<eos>` that ended them, so that `<eos>` is put back first: only it says
        that a group's last label is complete (a label could go on with another of its tokens).
        A frame output's value is its modality's `decode_frames` of `frames[column]` (what the output
        head made of the placeholders' states), or None when `frames` lacks it."""
        generated = list(generated)
        try:
            if not generated or generated[-1] != self.vocab.eos:
                ended = self._walk(generated + [self.vocab.eos])
                if ended[0]:
                    generated = generated + [self.vocab.eos]
        except ValueError:
            pass  # <eos> cannot come next: decode what there is
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
            if step.kind == "repeat":
                result.update(self._decode_group(step, outputs.get(k, []), meta, generated, logprobs))
                continue
            if step.kind == "frames":
                made = (frames or {}).get(step.column)
                handler = self.handlers.get(k) or MODALITIES[step.modality]
                result[step.column] = None if made is None else handler.decode_frames(made)
                continue
            result[step.column] = self._decode_step(self.handlers.get(k), step, outputs.get(k, []), meta)
        return result

    def _decode_step(self, handler: Modality | None, step: OutputStep, ids: list[int], meta: Mapping[str, Any]) -> Any:
        context_column = self.contexts.get(step.column)
        context = meta.get(context_column, {}) if context_column else {}
        return (handler or MODALITIES[step.modality]).decode_output(ids, self.vocab, context)

    def _decode_group(self, step: Repeat, reps: list[dict], meta: Mapping[str, Any], generated: list[int],
                      logprobs: Sequence[float] | None) -> dict[str, Any]:
        objects = []
        for rep in reps:
            obj = {}
            for j, sub in enumerate(step.steps):
                if sub.kind != "forced" and sub.column is not None:
                    obj[sub.column] = self._decode_step(step.handlers.get(j), sub, rep.get(j, []), meta)
            objects.append(obj)
        if logprobs is not None:  # a repetition's probability: exp of the mean log-probability of its ids
            for obj, rep in zip(objects, reps):
                chunk = [float(x) for x in logprobs[rep[SPAN][0] : rep[SPAN][1]]]
                obj["score"] = float(math.exp(sum(chunk) / len(chunk))) if chunk else 0.0
        out: dict[str, Any] = {c: [obj.get(c) for obj in objects] for c in step.columns[1:]}
        out[step.column] = objects
        return out
