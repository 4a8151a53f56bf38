import pytest

from ofasys.data.plan import OutputPlan, PlanError
from ofasys.instruction import parse_instruction


def plan_for(instruction, vocab, **kw):
    return OutputPlan.build(parse_instruction(instruction).templates[0], vocab, **kw)


def test_text_step_respects_lengths_and_ends_with_eos(vocab):
    plan = plan_for("[IMAGE:img] -> [TEXT:cap,max_length=3,min_length=1]", vocab)
    assert plan.prefix == (vocab.bos,)
    text = set(vocab.text_range)
    assert set(plan.allowed([])) == text  # min_length=1: no eos yet
    t = vocab.encode_text("two three four")
    assert set(plan.allowed(t[:1])) == text | {vocab.eos}
    assert list(plan.allowed(t[:3])) == [vocab.eos]  # max_length reached
    assert not plan.done(t[:3]) and plan.done([*t[:3], vocab.eos])
    assert plan.max_new_tokens == 4
    assert plan.decode([*t[:3], vocab.eos]) == {"cap": vocab.decode_text(t[:3])}
    assert plan.decode(t[:2]) == {"cap": vocab.decode_text(t[:2])}  # truncated output still decodes
    assert vocab.bin_id(0) not in plan.allowed(t[:1]) and vocab.bos not in plan.allowed(t[:1])


def test_box_step_exactly_four_bins_decoded_to_pixels(vocab):
    plan = plan_for('[IMAGE:img] <BOS> which region does the text " [TEXT:q] " describe? <EOS> -> [BOX:region,add_bos,add_eos]', vocab)
    bins = [vocab.bin_id(i) for i in (0, 3, 15, 12)]
    for k in range(4):
        assert list(plan.allowed(bins[:k])) == list(vocab.bin_range)
    assert list(plan.allowed(bins)) == [vocab.eos]
    assert plan.done([*bins, vocab.eos]) and plan.max_new_tokens == 5
    meta = {"task": "g", "meta": {"img": {"width": 150, "height": 30}}, "refs": {}}
    assert plan.decode(bins, meta) == {"region": [0.0, 6.0, 150.0, 24.0]}
    assert plan.decode([*bins, vocab.eos], meta["meta"]) == {"region": [0.0, 6.0, 150.0, 24.0]}
    assert plan.decode(bins[:2], meta) == {"region": None}
    with pytest.raises(KeyError, match="original size"):
        plan.decode(bins, {"meta": {}})
    with pytest.raises(ValueError):
        plan.allowed([vocab.bin_id(1), 7])


def test_closed_set_trie(vocab):
    labels = ["two", "two three", "four"]
    plan = plan_for("[TEXT:q] -> answer: [TEXT:a,closed_set] <EOS>", vocab, closed_sets={"a": labels})
    assert plan.prefix == (vocab.bos, *vocab.encode_text("answer:"))
    seqs = {lab: vocab.encode_text(lab) for lab in labels}
    assert sorted(plan.allowed([])) == sorted({s[0] for s in seqs.values()})
    two = seqs["two"]
    assert set(plan.allowed(two)) == {seqs["two three"][len(two)], vocab.eos}
    assert plan.done([*two, vocab.eos])
    assert plan.decode([*two, vocab.eos]) == {"a": "two"}
    assert plan.decode([*seqs["two three"], vocab.eos]) == {"a": "two three"}
    with pytest.raises(PlanError, match="no labels"):
        plan_for("[TEXT:q] -> [TEXT:a,closed_set]", vocab, closed_sets={})


def test_forced_text_between_slots(vocab):
    plan = plan_for("[IMAGE:img] -> <BOS> [TEXT:a] and [TEXT:b] <EOS>", vocab)
    and_ = vocab.encode_text("and")
    a, b = vocab.encode_text("two"), vocab.encode_text("three four")
    gen = [*a, *and_, *b, vocab.eos]
    # the text of `a` ends with the first forced token; the rest of the forced text is forced
    assert and_[0] in plan.allowed(a)
    if len(and_) > 1:
        assert list(plan.allowed([*a, and_[0]])) == [and_[1]]
    assert plan.done(gen)
    assert plan.decode(gen) == {"a": "two", "b": "three four"}


def test_adjacent_generated_slots_are_refused(vocab):
    with pytest.raises(PlanError, match="followed directly"):
        plan_for("[IMAGE:img] -> <BOS> [TEXT:a] [TEXT:b] <EOS>", vocab)
