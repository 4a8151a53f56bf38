"""The search's masks and what it reads back: one table built before the first step, rows shared
between equal sets, and per step a single host read of the top-2k candidates (never N x V)."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ofasys.generation import beam_search
from ofasys.generation.masks import ANY, MaskTable
from tests.generation.test_beam_reference import plans, vocab  # noqa: F401 - the shared vocab fixture


def test_equal_sets_share_a_row_and_rows_hold_their_ids():
    table = MaskTable()
    text = table.add((range(5, 9), (2,)))
    assert table.add((range(5, 9), (2,))) == text
    bins = table.add(((11, 13),))
    table.build(16, torch.device("cpu"))
    assert torch.nonzero(table.rows[text]).flatten().tolist() == [2, 5, 6, 7, 8]
    assert torch.nonzero(table.rows[bins]).flatten().tolist() == [11, 13]
    assert bool(table.rows[ANY].all())
    with pytest.raises(RuntimeError, match="already built"):
        table.add(((3,),))
    assert table.row_of_ids([4, 1]) == table.row_of_ids((4, 1)) == len(table.rows) - 1
    assert table.row_of_ids(None) == ANY


def test_ids_outside_the_vocabulary_are_refused():
    table = MaskTable()
    table.add((range(10, 20),))
    with pytest.raises(ValueError, match="outside the model's vocabulary of 16"):
        table.build(16, torch.device("cpu"))


class HostReads(TorchFunctionMode):
    """Records the size of every tensor read back into Python while active."""

    READS = {torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.numpy,
             torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__iter__}

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


class BigramDecoder:
    """Logits from the last fed token only, all on tensors (so its own work reads nothing back)."""

    def __init__(self, vocab_size: int):
        self.table = torch.randn((vocab_size, vocab_size), generator=torch.Generator().manual_seed(0)) * 3
        self.steps = 0

    def step(self, tokens):
        self.steps += 1
        return self.table.index_select(0, tokens)

    def reorder(self, index):
        pass


def test_each_step_reads_back_only_the_top_candidates(vocab):  # noqa: F811
    made = plans(vocab)
    beam = 3
    decoder = BigramDecoder(vocab.size)
    with HostReads() as reads:
        beam_search(decoder, [list(p.prefix) for p in made], made, beam_size=beam, eos_id=vocab.eos,
                    max_new_tokens=[p.max_new_tokens for p in made])
    assert 0 < len(reads.sizes) <= decoder.steps  # at most one read per step...
    assert max(reads.sizes) <= 2 * len(made) * 2 * beam  # ...of (score, id) x 2k per sample
    assert len(made) * beam * vocab.size > 10 * max(reads.sizes)
