"""OutputPlan: what the decoder may generate after its forced prefix, step by step, and how to read it.

The template's output side is a sequence of items; at inference everything up to the first slot to
generate is the forced prefix (`<bos>` + prompt text, + the sample's own `no_loss` slots), and the
rest becomes steps:

- forced: prompt text, specials, or a `no_loss` slot's known ids, emitted as they are;
- text:   text ids until the terminator (the token the template puts next, normally `<eos>`),
          at most `max_length`, at least `min_length` ids;
- box:    exactly 4 `<bin_i>` ids;
- closed: a path through a trie of the closed set's label ids, then the terminator.

The terminator of a text/closed step is the first token of whatever follows it in the template, so
a trailing `<EOS>` is consumed by the slot it ends (that is what a model trained on
`<bos> ids <eos>` emits). `generated` never includes the forced prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ofasys.instruction.ast import Group, Slot, Special, Template, Text
from ofasys.modalities.box import dequantise
from ofasys.vocab import UnifiedVocab

DEFAULT_MAX_TEXT_TOKENS = 64
"""Generation cap for a TEXT output without `max_length` when nothing better is known."""


class PlanError(ValueError):
    """The template's output side can't be generated as a plan (e.g. two slots with no separator)."""


@dataclass
class _Trie:
    children: dict[int, "_Trie"] = field(default_factory=dict)
    end: bool = False

    def add(self, ids: Sequence[int]) -> None:
        node = self
        for t in ids:
            node = node.children.setdefault(int(t), _Trie())
        node.end = True

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children.values()), default=0) if self.children else 0


@dataclass(frozen=True)
class Step:
    kind: str
    """"forced" | "text" | "box" | "closed"."""
    column: str | None = None
    modality: str | None = None
    tokens: tuple[int, ...] = ()
    """forced: the ids to emit."""
    terminator: int | None = None
    """text/closed: the id that ends the step (consumed by it)."""
    max_length: int = 0
    min_length: int = 0
    trie: Any = None


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
        image_column: str | None = None,
    ):
        self.steps = tuple(steps)
        self.vocab = vocab
        self.prefix = tuple(int(t) for t in prefix)
        """The forced prefix (`<bos>` first) that goes into decoder_input at inference."""
        self.image_column = image_column
        self._text_allowed = tuple(vocab.text_range)
        self._bins = tuple(vocab.bin_range)
        self._with_term: dict[int, tuple[int, ...]] = {}
        total = 0
        for s in self.steps:
            if s.kind == "forced":
                total += len(s.tokens)
            elif s.kind == "text":
                total += s.max_length + 1
            elif s.kind == "box":
                total += 4
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
        image_column: str | None = None,
        arrays: Mapping[str, Any] | None = None,
        default_max_text: int = DEFAULT_MAX_TEXT_TOKENS,
        text_cache: dict[str, tuple[int, ...]] | None = None,
    ) -> "OutputPlan":
        """Plan for `template`'s output side. `arrays` (a sample's arrays, keyed "<column>.<modality>")
        supplies `no_loss` slots' ids; `closed_sets` the labels of `closed_set` slots."""
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
        steps: list[Step] = []
        i = 0
        while i < len(merged):
            kind, val = merged[i]
            nxt = merged[i + 1] if i + 1 < len(merged) else None
            if kind == "tokens":
                steps.append(Step("forced", tokens=tuple(val)))
                i += 1
                continue
            slot: Slot = val
            mod = slot.modality
            if mod == "BOX":
                steps.append(Step("box", column=slot.column, modality=mod))
                i += 1
                continue
            if mod not in ("TEXT", "CATEGORY"):
                raise PlanError(f"generating {mod} is not yet supported (slot at {slot.pos} of {template.source!r})")
            # the terminator is the next forced token (consumed here), or <eos> at the end
            if nxt is None:
                term, rest = vocab.eos, None
            elif nxt[0] == "tokens":
                term, rest = nxt[1][0], nxt[1][1:]
            else:
                raise PlanError(
                    f"the {mod} slot at {slot.pos} of {template.source!r} is followed directly by another slot "
                    f"to generate; put <EOS> or prompt text between them so generation knows where it ends"
                )
            max_length = int(slot.attrs.get("max_length") or default_max_text)
            if slot.closed_set:
                labels = closed_sets.get(slot.column or "")
                if not labels:
                    raise PlanError(f"closed_set slot '{slot.column}' has no labels (closed_sets lacks it)")
                trie = _Trie()
                for label in labels:
                    ids = vocab.encode_text(label)
                    if slot.attrs.get("max_length"):
                        ids = ids[: int(slot.attrs["max_length"])]
                    trie.add(ids)
                steps.append(Step("closed", column=slot.column, modality=mod, terminator=term, trie=trie))
            else:
                steps.append(
                    Step(
                        "text",
                        column=slot.column,
                        modality=mod,
                        terminator=term,
                        max_length=max_length,
                        min_length=int(slot.attrs.get("min_length") or 0),
                    )
                )
            i += 1
            if nxt is not None:
                i += 1
                if rest:
                    steps.append(Step("forced", tokens=tuple(rest)))
        return cls(steps, vocab, prefix, image_column=image_column)

    def _text_choices(self, terminator: int) -> tuple[int, ...]:
        """Text ids plus the terminator (cached: the search asks at every step)."""
        cached = self._with_term.get(terminator)
        if cached is None:
            cached = self._text_allowed if terminator in self.vocab.text_range else self._text_allowed + (terminator,)
            self._with_term[terminator] = cached
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
            elif step.kind == "box":
                ids = outputs.setdefault(k, [])
                for _ in range(4):
                    if pos == n:
                        return False, self._bins, outputs
                    t = int(generated[pos])
                    if t not in self.vocab.bin_range:
                        raise ValueError(f"generated id {t} at {pos} is not a bin token")
                    ids.append(t)
                    pos += 1
            elif step.kind == "text":
                ids = outputs.setdefault(k, [])
                while True:
                    if pos == n:
                        may_end = len(ids) >= step.min_length or len(ids) >= step.max_length
                        if len(ids) >= step.max_length:
                            return False, (step.terminator,), outputs
                        return False, self._text_choices(step.terminator) if may_end else self._text_allowed, outputs
                    t = int(generated[pos])
                    pos += 1
                    if t == step.terminator and (len(ids) >= step.min_length or len(ids) >= step.max_length):
                        break
                    if t not in self.vocab.text_range or len(ids) >= step.max_length:
                        raise ValueError(f"generated id {t} at {pos - 1} is not allowed in the text of '{step.column}'")
                    ids.append(t)
            elif step.kind == "closed":
                ids = outputs.setdefault(k, [])
                node: _Trie = step.trie
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
        """{column: value} for every generated slot: TEXT/CATEGORY -> str, BOX -> [x0, y0, x1, y1] in
        the original image's pixels (None when incomplete). `meta` is the sample json (or its "meta"):
        BOX needs {image_column: {"width", "height"}}. Tolerates a trailing `<eos>` and truncation."""
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
            ids = outputs.get(k, [])
            if step.kind == "box":
                if len(ids) < 4:
                    result[step.column] = None
                    continue
                size = meta.get(self.image_column or "", {}) if self.image_column else {}
                if "width" not in size or "height" not in size:
                    raise KeyError(
                        f"decoding BOX '{step.column}' needs the original size of image "
                        f"'{self.image_column}' in meta (got keys {sorted(meta)})"
                    )
                bins = [self.vocab.bin_index(t) for t in ids]
                result[step.column] = dequantise(bins, int(size["width"]), int(size["height"]), self.vocab.num_bins)
            else:
                result[step.column] = self.vocab.decode_text(ids)
        return result


def _slot_ids(slot: Slot, arrays: Mapping[str, Any] | None, template: Template) -> tuple[int, ...]:
    key = f"{slot.column}.{slot.modality.lower()}"
    if arrays is None or key not in arrays:
        raise PlanError(
            f"the no_loss slot '{slot.column}' at {slot.pos} of {template.source!r} is forced from the sample, "
            f"but the sample has no '{key}' array"
        )
    return tuple(int(t) for t in arrays[key])
