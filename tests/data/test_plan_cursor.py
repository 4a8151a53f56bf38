"""The incremental cursor against the replaying walker: on every plan shape, for random valid and
invalid id sequences, both agree at every prefix on the ids allowed next (same ids, same order), on
completion, and on rejection; and the cursor's states are shared (interned), its sets enumerated up
front."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from ofasys.data.plan import OutputPlan
from ofasys.data.plan_steps import MAX_REPEATS
from ofasys.instruction import parse_instruction

LABELS = ["two", "two three", "four"]
BOX_Q = '[IMAGE:img] <BOS> which region does the text " [TEXT:q] " describe? <EOS> -> '
SHAPES = {
    "run with min and max": ("[IMAGE:img] -> [TEXT:cap,max_length=3,min_length=1]", {}),
    "box bins": (BOX_Q + "[BOX:region,add_bos,add_eos]", {}),
    "closed set": ("[TEXT:q] -> answer: [TEXT:a,closed_set] <EOS>", {}),
    "forced between runs": ("[IMAGE:img] -> <BOS> [TEXT:a,max_length=4] and [TEXT:b,max_length=4] <EOS>", {}),
    "run then box": ("[IMAGE:img] -> <BOS> [TEXT:a,min_length=2,max_length=4] at [BOX:r] <EOS>", {}),
    "group: box, closed label": ("[IMAGE:img] -> <BOS> ( [BOX:boxes] [TEXT:labels,closed_set] )* <EOS>", {MAX_REPEATS: 2}),
    "group: box, open label": ("[IMAGE:img] -> <BOS> ( [BOX:boxes] [TEXT:labels,max_length=3] )* <EOS>", {MAX_REPEATS: 2}),
    "group then prompt text": ("[IMAGE:img] -> <BOS> objects: ( [BOX:b] [TEXT:l,closed_set] )* end <EOS>",
                               {MAX_REPEATS: 3}),
    "group at the end": ("[IMAGE:img] -> <BOS> ( [BOX:b] [TEXT:l,closed_set] )*", {MAX_REPEATS: 2}),
    "group with prompt inside": ("[IMAGE:img] -> <BOS> ( at [BOX:b] is [TEXT:l,closed_set] ; )* <EOS>", {MAX_REPEATS: 2}),
    "frames": ("<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip,max_length=3] <EOS>", {}),
}


def build(vocab, name):
    instruction, assets = SHAPES[name]
    template = parse_instruction(instruction).templates[0]
    columns = [slot.column for side, slot in template.slots() if side == "output" and slot.attrs.get("closed_set")]
    return OutputPlan.build(template, vocab, closed_sets={c: LABELS for c in columns}, assets=assets)


def walker(plan, generated):
    """The replaying walker's answer: ("rejected",) | ("done",) | ("open", allowed ids)."""
    try:
        complete, allowed, _ = plan._walk(generated)
    except ValueError:
        return ("rejected",)
    return ("done",) if complete else ("open", tuple(allowed))


def cursor(plan, state):
    if state.rejected:
        return ("rejected",)
    return ("done",) if state.done else ("open", plan.cursor.ids(plan.mask_id(state)))


def pool(vocab):
    """Ids a wrong hypothesis might emit: specials, some bins and text ids, the labels' ids."""
    ids = {vocab.eos, vocab.bos, vocab.mask, *list(vocab.bin_range)[:3], *list(vocab.text_range)[:5]}
    for word in ("two three four", "and at objects: end ; is"):
        ids.update(vocab.encode_text(word))
    return sorted(ids)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_cursor_agrees_with_the_walker_on_random_sequences(vocab, name):
    plan = build(vocab, name)
    rng = random.Random(name)
    wrong = pool(vocab)
    seen = {"rejected": 0, "done": 0, "open": 0}
    for _ in range(150):
        generated: list[int] = []
        state = plan.start()
        for _ in range(plan.max_new_tokens + 3):
            expected = walker(plan, generated)
            assert cursor(plan, state) == expected, (name, generated)
            assert plan.done(generated) == state.done
            if expected[0] == "open":
                assert list(plan.allowed(generated)) == list(expected[1])
            seen[expected[0]] += 1
            if expected[0] == "open" and rng.random() < 0.9:
                token = rng.choice(expected[1])
            else:
                token = rng.choice(wrong)
            generated.append(token)
            state = plan.advance(state, token)
        assert cursor(plan, state) == walker(plan, generated)
    assert all(seen.values()), seen  # every outcome was exercised


def test_group_at_its_cap_rejects_another_repetition_the_walker_allowed(vocab):
    """The open label of a group's last allowed repetition still lists the group's first ids (the
    walker's `follow`); taking one is rejected, and `done` says so, on both paths alike."""
    plan = build(vocab, "group: box, open label")
    word = vocab.encode_text("two")[0]
    box = list(vocab.bin_range)[:4]
    generated = box + [word] + box + [word]
    state = plan.start()
    for t in generated:
        state = plan.advance(state, t)
    assert set(box) <= set(plan.cursor.ids(plan.mask_id(state)))  # the walker allows them too...
    assert plan.done(generated + [box[0]]) and plan.advance(state, box[0]).rejected  # ...and rejects them


def test_states_are_shared_and_sets_enumerated_once(vocab):
    plan = build(vocab, "group: box, closed label")
    box = list(vocab.bin_range)[:4]
    one, two = plan.start(), plan.start()
    for t in box:
        one, two = plan.advance(one, t), plan.advance(two, t)
    assert one is two
    parts = plan.mask_parts()
    assert plan.cursor.ids(0) == (vocab.eos,) and plan.cursor.ids(1) == ()
    assert 0 <= plan.mask_id(one) < len(parts)
    assert plan.mask_parts() == parts  # nothing was added while walking


def test_a_copied_plan_builds_its_own_cursor(vocab):
    plan = build(vocab, "group: box, closed label")
    plan.start()
    box = list(vocab.bin_range)[:4]
    for clone in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan)):
        state = clone.start()
        for t in box:
            state = clone.advance(state, t)
        assert clone.cursor.ids(clone.mask_id(state)) == tuple(clone.allowed(box))
