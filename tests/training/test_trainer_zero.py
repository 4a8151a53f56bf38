"""ZeRO stages change how optimizer state / parameters are sharded, not what is learned."""

from __future__ import annotations

import pytest
import torch

from ofasys.training import TrainConfig, Trainer, load_pretrained_state

from .fakes import FakeModel, make_tasks, make_vocab


def train(out, vocab, zero_stage):
    cfg = TrainConfig(max_steps=6, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2, warmup_steps=2,
                      grad_accum=2, log_every=3, save_every=3, zero_stage=zero_stage, seed=3)
    result = Trainer(FakeModel(), make_tasks(), None, cfg, out, vocab_path=vocab, model_config={}).fit()
    return result, load_pretrained_state(result.export_dir)


def test_zero3_matches_zero0_and_exports_full_weights(tmp_path):
    vocab = tmp_path / "vocab.json"
    make_vocab(vocab)
    r0, plain = train(tmp_path / "z0", vocab, 0)
    r3, sharded = train(tmp_path / "z3", vocab, 3)
    assert [h.loss for h in r3.history] == pytest.approx([h.loss for h in r0.history], rel=1e-5)
    initial = FakeModel().state_dict()
    assert plain.keys() == sharded.keys() == initial.keys()
    for k in plain:
        assert sharded[k].shape == initial[k].shape  # consolidated, not a rank's partition
        assert torch.allclose(sharded[k], plain[k], atol=1e-5), k
        assert not torch.equal(plain[k], initial[k]), f"{k} did not train"
    # ZeRO optimizer states pickle DeepSpeed classes; they load through the weights-only unpickler.
    again, _ = train(tmp_path / "z3", vocab, 3)
    assert again.resumed_from == 6 and again.history == []
