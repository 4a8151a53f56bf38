"""Activation checkpointing, per-layer torch.compile and CPU bf16 autocast leave the model's maths as
it was: same gradients (checkpointing), close losses and gradients (compile), a bf16 forward whose
loss is still a finite fp32 scalar (autocast)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

from ofasys.model import build_model

from .helpers import make_batch, tiny_config


def loss_and_grads(model, batch, seed: int = 7):
    """One training forward+backward with torch re-seeded first (so dropout draws the same masks)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _ = model.loss(batch, label_smoothing=0.1)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_gradients_with_dropout():
    model = build_model(tiny_config(dropout=0.1, attention_dropout=0.1), seed=1).train()
    batch = make_batch(seed=3)
    loss, grads = loss_and_grads(model, batch)
    model.set_activation_checkpointing(True)
    saved = []  # what checkpointing stores: it must actually be in use, not a silent pass-through
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        loss_ckpt, grads_ckpt = loss_and_grads(model, batch)
    plain_saved = []
    model.set_activation_checkpointing(False)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain_saved.append(t.shape) or t, lambda t: t):
        loss_and_grads(model, batch)
    assert len(saved) < len(plain_saved)  # fewer activations kept: the layers are recomputed
    assert torch.equal(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 20
    for name in grads:
        assert torch.allclose(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7), name
    # Dropout really is on: another seed gives another loss, so "equal" above is not vacuous.
    other, _ = loss_and_grads(model, batch, seed=8)
    assert not torch.equal(other, loss)


def test_checkpointing_is_off_in_eval_and_without_grad():
    model = build_model(tiny_config(dropout=0.0), seed=1)
    model.set_activation_checkpointing(True)
    batch = make_batch(seed=3)
    model.eval()
    with torch.no_grad():
        a = model(batch)
    model.set_activation_checkpointing(False)
    with torch.no_grad():
        b = model(batch)
    assert torch.equal(a, b)


def test_compiled_layers_match_eager_and_keep_state_dict_keys():
    batch = make_batch(seed=5)
    eager = build_model(tiny_config(dropout=0.0), seed=2).train()
    compiled = build_model(tiny_config(dropout=0.0), seed=2).train()
    keys = list(compiled.state_dict())
    compiled.compile_layers(backend="aot_eager")
    assert list(compiled.state_dict()) == keys  # no `_orig_mod.` prefix: checkpoints and exports unchanged
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    compiled_counted = build_model(tiny_config(dropout=0.0), seed=2).train()
    compiled_counted.compile_layers(backend=counter)
    loss_e, grads_e = loss_and_grads(eager, batch)
    loss_c, grads_c = loss_and_grads(compiled, batch)
    loss_and_grads(compiled_counted, batch)
    assert counter.frame_count >= 1  # the layers really went through dynamo
    assert loss_c == pytest.approx(float(loss_e), rel=1e-5)
    for name in grads_e:
        assert torch.allclose(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6), name


def test_cpu_bf16_autocast_runs_in_bf16_and_gives_a_finite_fp32_loss():
    model = build_model(tiny_config(dropout=0.0), seed=2).train()
    batch = make_batch(seed=5)
    seen = []
    hook = model.decoder_layers[0].ffn.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
        loss, stats = model.loss(batch, label_smoothing=0.1)
    hook.remove()
    assert logits.dtype == torch.bfloat16 and set(seen) == {torch.bfloat16}
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and stats["ntokens"] > 0
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    fp32_loss, _ = build_model(tiny_config(dropout=0.0), seed=2).train().loss(batch, label_smoothing=0.1)
    assert float(loss.detach()) == pytest.approx(float(fp32_loss.detach()), rel=0.05)  # bf16 rounding, not another model


@pytest.mark.slow
def test_inductor_compiled_layers_match_eager():
    """The real code generator (C++ on CPU: the machine's gcc), not only tracing. ~1-2 min cold."""
    batch = make_batch(seed=5)
    eager = build_model(tiny_config(dropout=0.0), seed=2).train()
    compiled = build_model(tiny_config(dropout=0.0), seed=2).train()
    torch._dynamo.reset()
    compiled.compile_layers(backend="inductor")
    loss_e, grads_e = loss_and_grads(eager, batch)
    loss_c, grads_c = loss_and_grads(compiled, batch)
    assert loss_c == pytest.approx(float(loss_e), rel=1e-4)
    for name in grads_e:
        assert torch.allclose(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5), name
