"""An `OutputPlan` walked one token at a time: the search's constraint in O(1) per token.

`OutputPlan._walk` replays a hypothesis from its first id at every question, which made the search's
per-step cost grow with the output's length and dominate generation. A `PlanCursor` instead names
where a hypothesis stands with a `PlanState` and moves it by one id (`advance`), with exactly the
walker's semantics: the same ids allowed at every point, the same point where the plan is complete,
the same ids rejected (a property test holds the two to each other).

Where a hypothesis stands is a *frame*: `(k, sub)`, step `k` of a list of steps and how far into it
(forced: the next token's index; fixed/run/frames: ids so far; closed: the trie node; repeat:
`(repetitions so far, the current repetition's frame or None between repetitions)`). Frames are
immutable tuples, and states are interned per frame, so equal hypotheses (beams) share one state
and the ids already tried from it (`advance` remembers each transition).

Every allowed-id set the plan can ask for is known from its steps alone, so the cursor enumerates
them once (`mask_parts`): each state names its set by index (`PlanState.mask`), and the search
turns the sets into one table of vocabulary masks on the model's device, built before the first
step. A set is given as parts, each a `range` or a tuple of ids, concatenated in the walker's order
(`ids`): ranges keep a text run's thousands of ids cheap to hash and to write into a mask row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Part = range | tuple[int, ...]
Parts = tuple[Part, ...]


class PlanState:
    """Where one hypothesis stands in its plan. Treat as immutable: `done` (complete, or rejected:
    the search finishes it either way, as `OutputPlan.done` says True for both), `rejected` (the
    ids left the plan) and `mask` (the index of its allowed-id set in `PlanCursor.mask_parts`).
    `_next` is the cursor's memo of transitions already computed from this state."""

    __slots__ = ("frame", "done", "rejected", "mask", "_next")

    def __init__(self, frame: Any, done: bool, rejected: bool, mask: int):
        self.frame, self.done, self.rejected, self.mask = frame, done, rejected, mask
        self._next: dict[int, PlanState] = {}

    def __repr__(self) -> str:
        what = "rejected" if self.rejected else "done" if self.done else repr(self.frame)
        return f"PlanState({what}, mask={self.mask})"


_DONE, _REJECTED = "done", "rejected"


class PlanCursor:
    """Incremental walker of one plan's steps (see module doc). `eos` is what a complete plan allows."""

    def __init__(self, steps: Sequence[Any], eos: int):
        self.steps = tuple(steps)
        self._keys: dict[Any, int] = {}
        self._parts: list[Parts] = []
        self._states: dict[Any, PlanState] = {}
        self._follow: dict[int, tuple[int, ...]] = {}  # id(repeat step) -> ids that end its last open step
        self._done_mask = self._register(_DONE, ((eos,),))
        self._rejected_mask = self._register(_REJECTED, ())
        self._enumerate(self.steps, ())
        self._start = self._state(self._settle(self.steps, 0))

    # ----- allowed-id sets ------------------------------------------------------------------------
    def _register(self, key: Any, parts: Parts) -> int:
        index = self._keys.get(key)
        if index is None:
            index = self._keys[key] = len(self._parts)
            self._parts.append(tuple(p for p in parts if len(p)))
        return index

    def _enumerate(self, steps: Sequence[Any], follow: tuple[int, ...]) -> None:
        """Register every set a walk through `steps` may ask for, in the walker's order of ids."""
        for step in steps:
            kind = step.kind
            if kind == "forced":
                for j, t in enumerate(step.tokens):
                    self._register((id(step), j), ((t,),))
            elif kind == "fixed":
                self._register((id(step), "ids"), (step.allowed,))
            elif kind in ("run", "frames"):
                allowed, term = step.allowed, step.terminator
                self._register((id(step), "ids"), (allowed,))
                if term is None:
                    self._register((id(step), "ends"), (follow,))
                    self._register((id(step), "ids+ends"), (allowed, follow))
                else:
                    self._register((id(step), "ends"), ((term,),))
                    self._register((id(step), "ids+ends"), (allowed,) if term in allowed else (allowed, (term,)))
            elif kind == "closed":
                ends = follow if step.terminator is None else (step.terminator,)
                stack = [step.trie]
                while stack:
                    node = stack.pop()
                    self._register(id(node), (tuple(sorted(node.children)), ends if node.end else ()))
                    stack.extend(node.children.values())
            elif kind == "repeat":
                self._register((id(step), "more"), (step.first + step.exit,))
                self._register((id(step), "exit"), (step.exit,))
                inner = self._follow[id(step)] = step.first + step.exit
                self._enumerate(step.steps, inner)
            else:
                raise ValueError(f"unknown plan step kind {kind!r}")

    def mask_parts(self) -> tuple[Parts, ...]:
        """Every allowed-id set, by mask index: parts (ranges or id tuples) whose concatenation is
        the set in the walker's order. Index 0 is a complete plan's set (`<eos>`), 1 the empty set."""
        return tuple(self._parts)

    def ids(self, mask: int) -> tuple[int, ...]:
        """The ids of set `mask`, in the walker's order."""
        return tuple(t for part in self._parts[mask] for t in part)

    def _mask(self, steps: Sequence[Any], frame: tuple[int, Any]) -> int:
        """The set allowed next at `frame` (an incomplete one) of `steps`: what the walker returns
        when the ids run out there."""
        k, sub = frame
        step = steps[k]
        kind = step.kind
        if kind == "forced":
            return self._keys[(id(step), sub)]
        if kind == "fixed":
            return self._keys[(id(step), "ids")]
        if kind in ("run", "frames"):
            if sub >= step.max_length:
                return self._keys[(id(step), "ends")]
            if sub < step.min_length:
                return self._keys[(id(step), "ids")]
            return self._keys[(id(step), "ids+ends")]
        if kind == "closed":
            return self._keys[id(sub)]
        reps, child = sub
        if child is None:
            return self._keys[(id(step), "more" if reps < step.max_count else "exit")]
        return self._mask(step.steps, child)

    # ----- states ---------------------------------------------------------------------------------
    def start(self) -> PlanState:
        """The state before any generated id."""
        return self._start

    def _state(self, frame: Any) -> PlanState:
        if frame != _REJECTED and frame[0] == len(self.steps):
            frame = _DONE
        state = self._states.get(frame)
        if state is None:
            if frame == _REJECTED:
                state = PlanState(frame, True, True, self._rejected_mask)
            elif frame == _DONE:
                state = PlanState(frame, True, False, self._done_mask)
            else:
                state = PlanState(frame, False, False, self._mask(self.steps, frame))
            self._states[frame] = state
        return state

    def advance(self, state: PlanState, token: int) -> PlanState:
        """The state after `token`. A complete plan stays complete whatever follows (the walker
        ignores ids after it); ids that leave the plan give the rejected state, which stays so."""
        nxt = state._next.get(token)
        if nxt is None:
            if state.done:
                nxt = state
            else:
                fed = self._feed(self.steps, state.frame, (), int(token))
                nxt = self._state(_REJECTED if fed is None else fed[1])
            state._next[token] = nxt
        return nxt

    # ----- one token ------------------------------------------------------------------------------
    @staticmethod
    def _settle(steps: Sequence[Any], k: int) -> tuple[int, Any]:
        """The frame at the start of step `k`, past steps that need no id (none in practice: a
        forced step without ids, a fixed one of length 0); (len(steps), None) when complete."""
        while k < len(steps):
            step = steps[k]
            if step.kind == "forced" and not step.tokens or step.kind == "fixed" and step.length == 0:
                k += 1
                continue
            if step.kind == "closed":
                return k, step.trie
            if step.kind == "repeat":
                return k, (0, None)
            return k, 0
        return k, None

    def _feed(self, steps: Sequence[Any], frame: tuple[int, Any], follow: tuple[int, ...], t: int):
        """Feed `t` at `frame` of `steps`: (consumed, frame after) — the frame after is
        (len(steps), None) when the steps are complete, and `t` may then be left unconsumed for
        what follows them (an open-ended last step of a repetition ends at the next one's first id)
        — or None when `t` leaves the plan. Mirrors `OutputPlan._walk_steps` branch by branch."""
        k, sub = frame
        n = len(steps)
        while k < n:
            step = steps[k]
            kind = step.kind
            if kind == "forced":
                if t != step.tokens[sub]:
                    return None
                if sub + 1 == len(step.tokens):
                    return True, self._settle(steps, k + 1)
                return True, (k, sub + 1)
            if kind == "fixed":
                if t not in step.allowed:
                    return None
                if sub + 1 >= step.length:
                    return True, self._settle(steps, k + 1)
                return True, (k, sub + 1)
            if kind in ("run", "frames"):
                open_end = step.terminator is None
                may_end = sub >= step.min_length or sub >= step.max_length
                if may_end and open_end and t in follow:
                    k, sub = self._settle(steps, k + 1)  # the next repetition or the exit begins
                    continue
                if may_end and not open_end and t == step.terminator:
                    return True, self._settle(steps, k + 1)
                if t not in step.allowed or sub >= step.max_length:
                    return None
                return True, (k, sub + 1)
            if kind == "closed":
                if sub.end and step.terminator is None and t in follow:
                    k, sub = self._settle(steps, k + 1)
                    continue
                if sub.end and step.terminator is not None and t == step.terminator:
                    return True, self._settle(steps, k + 1)
                child = sub.children.get(t)
                if child is None:
                    return None
                return True, (k, child)
            # repeat
            reps, inner = sub
            if inner is None:
                if t in step.exit:
                    k, sub = self._settle(steps, k + 1)  # what follows the group consumes it
                    continue
                if reps >= step.max_count or t not in step.first:
                    return None
                inner = self._settle(step.steps, 0)
            fed = self._feed(step.steps, inner, self._follow[id(step)], t)
            if fed is None:
                return None
            consumed, inner = fed
            if inner[0] < len(step.steps):
                return True, (k, (reps, inner))
            sub = (reps + 1, None)  # the repetition is complete
            if consumed:
                return True, (k, sub)
            # not consumed: the group decides what `t` does (another repetition, or its exit)
        return False, (k, None)
