"""Finished samples leave the KV-cached decoder (`CachedDecoder.select`) and nothing else changes: a
kept row's next logits are the ones it would have had, and `generate` / `search` give the same
outputs with pruning as without, on a tiny random model. Scores agree to float rounding only: a
smaller batch may sum a matrix product in another order (as batched vs one-at-a-time inference)."""

import dataclasses

import pytest
import torch

from ofasys.generation.beam import beam_search
from ofasys.model import UniversalModel

from .helpers import VOCAB, make_batch, tiny_config


class CapPlan:
    """Any id, done at <eos> (id 2), at most `max_new_tokens` of them: samples end at different steps."""

    def __init__(self, max_new_tokens):
        self.max_new_tokens = max_new_tokens

    def allowed(self, generated):
        return None

    def done(self, generated):
        return bool(generated) and generated[-1] == 2


def batch_of_six(seed):
    batch = make_batch(seed=seed, batch=6)
    prefix = torch.tensor([[1, 7, 8, 9], [1, 0, 0, 0], [1, 5, 0, 0], [1, 6, 6, 0], [1, 0, 0, 0], [1, 9, 9, 9]])
    return dataclasses.replace(batch, decoder_input=prefix, target=None, loss_mask=None)


def same(found, kept):
    """The same ids exactly; scores and log-probs up to float rounding."""
    assert [h.tokens for h in found] == [h.tokens for h in kept]
    for f, k in zip(found, kept):
        assert f.score == pytest.approx(k.score, abs=1e-5) and f.logprob == pytest.approx(k.logprob, abs=1e-5)


def random_model(seed):
    torch.manual_seed(seed)
    return UniversalModel(tiny_config(init_std=0.3)).eval()  # large init: peaky, varied outputs


class CountingDecoder:
    """The model's cached decoder, recording the rows of every step (how far pruning went)."""

    def __init__(self, inner):
        self.inner, self.widths = inner, []

    def step(self, tokens):
        self.widths.append(len(tokens))
        return self.inner.step(tokens)

    def reorder(self, index):
        self.inner.reorder(index)

    def select(self, rows):
        self.inner.select(rows)


def test_selected_rows_continue_exactly_as_before():
    model, batch = random_model(0), batch_of_six(0)
    with torch.no_grad():
        full, pruned = model.incremental_decoder(batch, 2), model.incremental_decoder(batch, 2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            tokens = torch.randint(3, VOCAB, (12,), generator=gen)
            assert torch.equal(full.step(tokens), pruned.step(tokens))
        rows = torch.tensor([3, 2, 8, 8, 11, 10])  # samples 1, 4, 5 kept, beams swapped and duplicated
        full.reorder(torch.tensor([0, 1, 3, 2, 4, 5, 6, 7, 8, 8, 11, 10]))
        pruned.select(rows)
        for _ in range(3):
            tokens = torch.randint(3, VOCAB, (12,), generator=gen)
            kept = tokens[[2, 3, 8, 9, 10, 11]]
            torch.testing.assert_close(pruned.step(kept), full.step(tokens)[[2, 3, 8, 9, 10, 11]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beam", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_generate_with_pruning_equals_generate_without(beam, seed):
    model, batch = random_model(seed), batch_of_six(seed)
    plans = [CapPlan(m) for m in (7, 1, 4, 2, 6, 3)]
    kept = model.search(batch, plans, beam_size=beam, prune_at=None)
    for prune_at in (0.0, 0.25, 1.0):
        same(model.search(batch, plans, beam_size=beam, prune_at=prune_at), kept)
    assert model.generate(batch, plans, beam_size=beam) == [h.tokens for h in kept]
    assert len({len(h.tokens) for h in kept}) >= 3  # samples end at different steps
    # The decoder really lost rows on the way.
    lengths = (batch.decoder_input != 0).sum(1).tolist()
    prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
    decoder = CountingDecoder(model.incremental_decoder(batch, beam))
    found = beam_search(decoder, prefixes, plans, beam_size=beam, eos_id=2,
                        max_new_tokens=[p.max_new_tokens for p in plans], prune_at=0.0)
    same(found, kept)
    assert decoder.widths[0] == 6 * beam and decoder.widths[-1] < 3 * beam


def test_select_takes_whole_samples_only():
    model, batch = random_model(0), batch_of_six(0)
    decoder = model.incremental_decoder(batch, 2)
    decoder.step(torch.full((12,), 5))
    with pytest.raises(ValueError, match="whole samples"):
        decoder.select(torch.tensor([3, 4]))  # one row of sample 1, one of sample 2
    with pytest.raises(ValueError, match="whole samples"):
        decoder.select(torch.tensor([3]))
    decoder.select(torch.tensor([5, 4, 1, 1]))  # samples 2 and 0, beams reordered within each
    assert decoder.cross[0].keys.shape[0] == 2 and decoder.step(torch.full((4,), 5)).shape[0] == 4
