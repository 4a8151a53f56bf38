"""The trainer with `train.precision`, `compile`, `activation_checkpointing` and ZeRO offload, on CPU
with real DeepSpeed: the default stays bit-for-bit fp32, CPU bf16 autocasts every forward, and the
memory/speed options train what the plain run trains."""

from __future__ import annotations

import math

import pytest
import torch

from ofasys.model import ModelConfig, build_model
from ofasys.training import TrainConfig, Trainer, load_pretrained_state

from .fakes import VOCAB, FakeModel, make_tasks, make_vocab

BASE = dict(max_steps=4, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2, warmup_steps=2,
            grad_accum=2, log_every=2, save_every=0, seed=3)


class AutocastProbe(FakeModel):
    """FakeModel that records, per forward, whether CPU autocast was on and its logits' dtype."""

    def __init__(self) -> None:
        super().__init__(dropout=0.1)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def loss(self, batch, label_smoothing: float = 0.0):
        self.seen.append((torch.is_autocast_enabled("cpu"), self(batch).dtype))
        return super().loss(batch, label_smoothing)


def fit(out, model, vocab=None, tasks=None, **overrides):
    cfg = TrainConfig(**{**BASE, **overrides})
    trainer = Trainer(model, tasks or make_tasks(), None, cfg, out, vocab_path=vocab,
                      model_config={} if vocab else None)
    return trainer.fit()


def test_default_precision_is_fp32_bit_for_bit_and_never_autocasts(tmp_path):
    vocab = tmp_path / "vocab.json"
    make_vocab(vocab)
    runs = {}
    for precision in ("auto", "fp32"):
        model = AutocastProbe()
        runs[precision] = fit(tmp_path / precision, model, vocab, precision=precision)
        assert model.seen and all(s == (False, torch.float32) for s in model.seen)
    assert [h.loss for h in runs["auto"].history] == [h.loss for h in runs["fp32"].history]
    a, b = (load_pretrained_state(r.export_dir) for r in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_bf16_autocasts_training_and_validation_forwards(tmp_path):
    model = AutocastProbe()
    tasks = make_tasks()
    result = Trainer(model, tasks, None, TrainConfig(**{**BASE, "precision": "bf16", "valid_every": 2,
                                                        "valid_samples": 8}),
                     tmp_path, valid_tasks=make_tasks()).fit()
    assert result.step == 4 and all(math.isfinite(h.loss) for h in result.history)
    assert result.best_valid_loss is not None and math.isfinite(result.best_valid_loss)
    train_forwards = len(result.history)
    assert len(model.seen) > train_forwards  # validation forwards were probed too
    assert all(s == (True, torch.bfloat16) for s in model.seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 on CPU


def universal_model(dropout: float = 0.1) -> torch.nn.Module:
    config = ModelConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, heads=4, ffn_dim=64,
                         dropout=dropout, max_positions=64)
    return build_model(config, seed=0)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("plain"), universal_model())


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_activation_checkpointing_trains_what_the_plain_model_trains(tmp_path, plain_run, zero_stage):
    """The universal model through DeepSpeed, each layer recomputed in the backward: the same losses,
    also under ZeRO-3 (whose hooks gather a layer's parameters again for the recomputation)."""
    model = universal_model()
    linear = torch.nn.functional.linear
    result = fit(tmp_path, model, activation_checkpointing=True, zero_stage=zero_stage)
    assert torch.nn.functional.linear is linear  # ZeRO-3's process-wide replacement is undone after fit
    assert model.activation_checkpointing
    assert [h.loss for h in result.history] == pytest.approx([h.loss for h in plain_run.history], rel=1e-5)


@pytest.mark.slow
def test_compiled_layers_train_what_the_plain_model_trains(tmp_path, plain_run):
    """Per-layer compile (aot_eager: traced and partitioned like inductor, but no code generation, so the
    test does not wait for a C++ build) together with checkpointing: the plain run's losses. ~35 s."""
    torch._dynamo.reset()
    model = universal_model()
    result = fit(tmp_path, model, compile=True, compile_backend="aot_eager", activation_checkpointing=True)
    assert all(getattr(layer, "_compiled_call_impl", None) is not None
               for layer in (*model.encoder_layers, *model.decoder_layers))
    assert [h.loss for h in result.history] == pytest.approx([h.loss for h in plain_run.history], rel=1e-4)
    assert [(h.task, h.ntokens) for h in result.history] == [(h.task, h.ntokens) for h in plain_run.history]


def test_a_model_without_checkpointing_support_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train.activation_checkpointing: FakeModel has no"):
        fit(tmp_path, FakeModel(), activation_checkpointing=True)


@pytest.mark.parametrize("zero", [
    dict(zero_stage=1, offload_optimizer="cpu"),
    dict(zero_stage=2),
    dict(zero_stage=2, offload_optimizer="cpu"),
])
def test_zero_stages_with_offload_match_stage_0(tmp_path, monkeypatch, zero):
    import deepspeed

    reference = fit(tmp_path / "z0", FakeModel(dropout=0.1))
    engines = []
    real_initialize = deepspeed.initialize

    def initialize(**kwargs):  # the real DeepSpeed engine, kept to ask it what it does
        out = real_initialize(**kwargs)
        engines.append(out[0])
        return out

    monkeypatch.setattr(deepspeed, "initialize", initialize)
    result = fit(tmp_path / "z", FakeModel(dropout=0.1), **zero)
    (engine,) = engines
    assert engine.zero_optimization_stage() == zero["zero_stage"]
    assert engine.zero_cpu_offload() == ("offload_optimizer" in zero)
    assert [h.task for h in result.history] == [h.task for h in reference.history]
    assert [h.loss for h in result.history] == pytest.approx([h.loss for h in reference.history], rel=1e-5)


def test_a_world_of_one_skips_the_gradient_allreduce_bit_for_bit(tmp_path, monkeypatch):
    import deepspeed

    import ofasys.training.trainer as trainer_module

    engines = []
    real_initialize = deepspeed.initialize

    def initialize(**kwargs):
        out = real_initialize(**kwargs)
        engines.append(out[0])
        return out

    monkeypatch.setattr(deepspeed, "initialize", initialize)
    models = {"skipped": FakeModel(dropout=0.1), "reduced": FakeModel(dropout=0.1)}
    skipped = fit(tmp_path / "skipped", models["skipped"])
    assert engines[-1].enable_backward_allreduce is False
    monkeypatch.setattr(trainer_module, "skip_single_rank_allreduce", lambda *args: None)
    reduced = fit(tmp_path / "reduced", models["reduced"])
    assert engines[-1].enable_backward_allreduce is True
    assert [h.loss for h in skipped.history] == [h.loss for h in reduced.history]
    a, b = (m.state_dict() for m in models.values())  # the engine trained these modules in place
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mix.weight"], FakeModel(dropout=0.1).state_dict()["mix.weight"])


@pytest.mark.slow
def test_a_model_without_compile_layers_is_compiled_whole(tmp_path):
    """Any LossModel can ask for compile: without `compile_layers` the whole loss module is compiled
    (graph breaks where its Python needs values), and it trains what the eager run trains. ~25 s."""
    from torch._dynamo.utils import counters

    eager = fit(tmp_path / "eager", FakeModel(dropout=0.0), max_steps=2)
    torch._dynamo.reset()
    counters.clear()
    compiled = fit(tmp_path / "compiled", FakeModel(dropout=0.0), max_steps=2, compile=True,
                   compile_backend="aot_eager")
    assert counters["frames"]["ok"] > 0  # dynamo did convert frames of the loss
    assert [h.loss for h in compiled.history] == pytest.approx([h.loss for h in eager.history], rel=1e-5)
