"""The vectorised search equals the search as first written (`reference_beam.py`), hypothesis for
hypothesis (ids, score, log-prob, exactly), on random toy distributions over a real vocabulary and
real plans of every shape: text runs, closed sets, boxes, repeat groups with closed and open labels,
frames, forced text between slots; with samples of different prefix lengths and caps in one batch,
greedy and beams, several length penalties. Both through the plans' cursors and through constraints
that only answer `allowed`/`done`."""

from __future__ import annotations

import pytest
import torch

from ofasys.data.plan import OutputPlan
from ofasys.data.plan_steps import MAX_REPEATS
from ofasys.generation import beam_search
from ofasys.generation.beam import PRUNE_AT
from ofasys.instruction import parse_instruction
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from tests.generation.reference_beam import reference_beam_search
from tests.generation.test_beam import PruningTableDecoder, TableDecoder

WORDS = "zero one two three four five six".split()
LABELS = ["two", "two three", "four", "five six"]
TEMPLATES = [
    ("[IMAGE:img] -> <BOS> [TEXT:cap,max_length=5] <EOS>", {}),
    ("[TEXT:q] -> <BOS> answer: [TEXT:a,closed_set] <EOS>", {}),
    ("[IMAGE:img] -> <BOS> ( [BOX:boxes] [TEXT:labels,closed_set] )* <EOS>", {MAX_REPEATS: 2}),
    ("[IMAGE:img] -> <BOS> ( [BOX:boxes] [TEXT:labels,max_length=2] )* <EOS>", {MAX_REPEATS: 2}),
    ("[IMAGE:img] -> <BOS> the [TEXT:a,min_length=2,max_length=3] at [BOX:r] <EOS>", {}),
    ("<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip,max_length=3] <EOS>", {}),
    ('[IMAGE:img] <BOS> which region does " [TEXT:q] " describe? <EOS> -> [BOX:region,add_bos,add_eos]', {}),
]


@pytest.fixture(scope="module")
def vocab() -> UnifiedVocab:
    corpus = ["which region does describe? answer: the at", *[f"{a} {b}" for a in WORDS for b in WORDS]]
    return UnifiedVocab.build(train_text_tokenizer(corpus, vocab_size=300), num_bins=8)


def plans(vocab):
    out = []
    for instruction, assets in TEMPLATES:
        template = parse_instruction(instruction).templates[0]
        closed = {slot.column: LABELS for side, slot in template.slots() if slot.attrs.get("closed_set")}
        out.append(OutputPlan.build(template, vocab, closed_sets=closed, assets=assets))
    return out


class ReplayOnly:
    """A plan seen only through `allowed`/`done`: the search falls back to asking it per row."""

    def __init__(self, plan):
        self.plan, self.max_new_tokens = plan, plan.max_new_tokens

    def allowed(self, generated):
        return self.plan.allowed(generated)

    def done(self, generated):
        return self.plan.done(generated)


def toy(vocab_size: int, eos: int, seed: int):
    """A fixed random distribution per history, drifting towards <eos> as it grows."""
    def fn(history):
        gen = torch.Generator().manual_seed(hash((seed, tuple(history))) % 2**31)
        logits = torch.randn(vocab_size, generator=gen) * 3
        logits[eos] += 0.7 * len(history) - 3
        return logits
    return fn


def both(vocab, constraints, beam, seed, length_penalty, caps):
    """(the search, the reference); the search also run with finished samples pruned from a decoder
    that can drop rows, as soon as any finishes, at the default share and never, all equal."""
    prefixes = [list(p.prefix) for p in plans(vocab)]
    fn = toy(vocab.size, vocab.eos, seed)
    kw = dict(beam_size=beam, eos_id=vocab.eos, max_new_tokens=caps, length_penalty=length_penalty)
    new = beam_search(TableDecoder(len(prefixes) * beam, fn), prefixes, constraints, **kw)
    ref = reference_beam_search(TableDecoder(len(prefixes) * beam, fn), prefixes, constraints, **kw)
    for prune_at in (0.0, PRUNE_AT, None):
        decoder = PruningTableDecoder(len(prefixes) * beam, fn)
        assert beam_search(decoder, prefixes, constraints, prune_at=prune_at, **kw) == new
        if prune_at is None:
            assert set(decoder.widths) == {len(prefixes) * beam}
    return new, ref


@pytest.mark.parametrize("beam", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pruning_finished_samples_searches_the_same(vocab, beam, seed):
    """Samples finish at different steps (caps, <eos>, plans' ends), have prefixes of different lengths,
    and the decoder loses their rows step by step: still equal to the reference, hypothesis for hypothesis."""
    made = plans(vocab)
    caps = [p.max_new_tokens for p in made]
    caps[seed % len(caps)] = 1
    caps[(seed + 3) % len(caps)] = 3
    prefixes = [list(p.prefix) for p in made]
    fn = toy(vocab.size, vocab.eos, seed)
    kw = dict(beam_size=beam, eos_id=vocab.eos, max_new_tokens=caps)
    ref = reference_beam_search(TableDecoder(len(made) * beam, fn), prefixes, made, **kw)
    decoder = PruningTableDecoder(len(made) * beam, fn)
    assert beam_search(decoder, prefixes, made, prune_at=0.0, **kw) == ref
    widths = [w // beam for w in decoder.widths]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) >= 3  # pruned more than once
    assert widths[0] == len(made) and widths[-1] >= 1
    assert len({len(h.tokens) for h in ref}) >= 3  # the samples did finish at different lengths


@pytest.mark.parametrize("beam", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_search_equals_the_reference(vocab, beam, seed):
    made = plans(vocab)
    assert len({len(p.prefix) for p in made}) > 1  # prefixes of different lengths in one batch
    lengths = []
    for length_penalty in (1.0, 0.6):
        caps = [p.max_new_tokens for p in made]
        caps[seed % len(caps)] = 2  # one sample cut short
        new, ref = both(vocab, made, beam, seed, length_penalty, caps)
        assert new == ref
        lengths += [len(h.tokens) for h in new]
    assert max(lengths) >= 5  # the outputs go through several steps of their plans


def test_repeat_groups_generate_objects_in_the_comparison(vocab):
    made = plans(vocab)
    found = []
    for seed in range(6):
        new, ref = both(vocab, made, 3, seed, 1.0, [p.max_new_tokens for p in made])
        assert new == ref
        meta = {"img": {"width": 8, "height": 8}}
        found += [len(made[i].decode(new[i].tokens, meta)["boxes"]) for i in (2, 3)]
    assert max(found) >= 1  # some hypotheses hold whole objects (box then label)


@pytest.mark.parametrize("beam", [1, 3])
def test_constraints_without_a_cursor_search_the_same(vocab, beam):
    made = plans(vocab)
    caps = [p.max_new_tokens for p in made]
    caps[0] = 0  # nothing may be generated: an empty output
    cursor, ref = both(vocab, made, beam, 7, 1.0, caps)
    replay, _ = both(vocab, [ReplayOnly(p) for p in made], beam, 7, 1.0, caps)
    assert cursor == ref == replay
    assert cursor[0].tokens == [] and cursor[0].logprob == 0.0
