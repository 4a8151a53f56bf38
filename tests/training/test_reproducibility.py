"""Same params and seed -> the same training run, whatever randomness the process used before."""

from __future__ import annotations

import torch

from ofasys.model import ModelConfig, build_model
from ofasys.training import TrainConfig, Trainer

from .fakes import VOCAB, make_tasks, make_vocab

MODEL = ModelConfig(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, heads=2, ffn_dim=32,
                    dropout=0.1, adaptors={"IMAGE": {"stem_channels": 8}}, max_positions=32)
CFG = TrainConfig(max_steps=6, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2, warmup_steps=2,
                  grad_accum=2, log_every=2, save_every=3, seed=17)


def train(out, vocab, rng_draws: int):
    torch.rand(rng_draws)  # earlier work in the process (data prep, another model) used the global RNG
    model = build_model(MODEL, CFG.seed)
    return Trainer(model, make_tasks(), None, CFG, out, vocab_path=vocab, model_config=MODEL.to_dict()).fit()


def test_two_runs_of_the_same_params_export_byte_identical_weights(tmp_path):
    vocab = tmp_path / "vocab.json"
    make_vocab(vocab)
    torch.manual_seed(1)  # different global RNG states before each run
    a = train(tmp_path / "a", vocab, rng_draws=5)
    b = train(tmp_path / "b", vocab, rng_draws=1234)
    assert [(r.step, r.micro, r.task, r.loss) for r in a.history] == \
        [(r.step, r.micro, r.task, r.loss) for r in b.history]
    assert len(a.history) == CFG.max_steps * CFG.grad_accum
    for name in ("model.safetensors", "config.json"):
        assert (a.export_dir / name).read_bytes() == (b.export_dir / name).read_bytes(), name
