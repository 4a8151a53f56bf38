"""Trainer: the DeepSpeed loop on CPU with the fake task data and model; exact resume after a crash,
with batches made on the training thread (num_workers=0) and by loader worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ofasys.training import TrainConfig, Trainer, load_pretrained_config, load_pretrained_state
from ofasys.training.schedule import lr_factor
from ofasys.training.checkpoints import checkpoint_tags

from .fakes import FakeModel, make_tasks, make_vocab

WEIGHTS = {"caption": 0.3, "grounding": 0.3, "vqa": 0.1, "infill": 0.3}
CFG = TrainConfig(max_steps=30, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2,
                  warmup_steps=5, grad_accum=2, log_every=1, save_every=5, keep_last=2, seed=11)


class Crash(RuntimeError):
    pass


def run(out: Path, vocab: Path, config: TrainConfig = CFG, crash_at: int | None = None, logs=None):
    logs = [] if logs is None else logs

    def log_fn(step, metrics):
        logs.append((step, metrics))
        if step == crash_at:
            raise Crash(f"simulated kill at step {step}")

    trainer = Trainer(FakeModel(dropout=0.1), make_tasks(), WEIGHTS, config, out, log_fn,
                      vocab_path=vocab, model_config={"d": 16}, record_samples=True)
    return trainer.fit(), logs


@pytest.fixture(scope="module", params=[0, 2], ids=["in-process", "2-workers"])
def runs(request, tmp_path_factory):
    """A straight 30-step run, and a run killed at step 17 (last checkpoint 15) then restarted."""
    config = TrainConfig(**{**CFG.to_dict(), "num_workers": request.param})
    root = tmp_path_factory.mktemp("trainer")
    vocab = root / "vocab.json"
    make_vocab(vocab)
    straight, straight_logs = run(root / "straight", vocab, config)
    with pytest.raises(Crash):
        run(root / "crashed", vocab, config, crash_at=17)
    tags_after_crash = checkpoint_tags(root / "crashed" / "ds")
    resumed, _ = run(root / "crashed", vocab, config)
    return dict(root=root, vocab=vocab, straight=straight, logs=straight_logs, resumed=resumed,
                tags_after_crash=tags_after_crash, config=config)


def test_resume_after_kill_gives_identical_losses_samples_and_weights(runs):
    straight, resumed = runs["straight"], runs["resumed"]
    assert runs["tags_after_crash"] == [(10, "step10"), (15, "step15")]
    assert resumed.resumed_from == 15 and resumed.step == 30
    tail = [r for r in straight.history if r.step > 15]
    assert len(tail) == 15 * CFG.grad_accum
    assert [(r.step, r.micro, r.task, r.indices) for r in resumed.history] == \
        [(r.step, r.micro, r.task, r.indices) for r in tail]
    assert [r.loss for r in resumed.history] == [r.loss for r in tail]  # bit-identical, not approx
    a = load_pretrained_state(straight.export_dir)
    b = load_pretrained_state(resumed.export_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Same inputs + seed -> byte-identical export.
    for name in ("model.safetensors", "config.json", "vocab.json"):
        assert (straight.export_dir / name).read_bytes() == (resumed.export_dir / name).read_bytes()


def test_logs_checkpoints_and_export(runs):
    straight, logs = runs["straight"], runs["logs"]
    assert [s for s, _ in logs] == list(range(1, 31))
    for step, metrics in logs:
        assert metrics["lr"] == pytest.approx(CFG.lr * lr_factor(step - 1, warmup_steps=5, max_steps=30,
                                                                 min_lr_ratio=0.0))
        assert {"train/loss", "samples/s", "tokens/s"} <= set(metrics)
        for key, value in metrics.items():
            assert isinstance(value, float) and value == value, key
        tasks = {k.split("/")[-1] for k in metrics if k.startswith("train/loss/")}
        assert tasks and all(f"train/acc/{t}" in metrics for t in tasks)
    assert {r.task for r in straight.history} == set(WEIGHTS)
    assert checkpoint_tags(straight.checkpoint_dir) == [(25, "step25"), (30, "step30")]
    assert (straight.checkpoint_dir / "latest").read_text().strip() == "step30"
    config = load_pretrained_config(straight.export_dir)
    assert config["model"] == {"d": 16} and set(config["tasks"]) == set(WEIGHTS)
    assert config["tasks"]["caption"]["instruction"].startswith("[TEXT:src]")
    model = FakeModel()
    model.load_state_dict(load_pretrained_state(straight.export_dir), strict=True)
    # It learned something: the loss of the last steps is below the first steps'.
    first = sum(r.loss for r in straight.history[:10]) / 10
    last = sum(r.loss for r in straight.history[-10:]) / 10
    assert last < first


def test_finished_run_restarts_as_a_no_op(runs):
    again, _ = run(runs["root"] / "straight", runs["vocab"], runs["config"])
    assert again.resumed_from == 30 and again.history == []


def test_resume_with_changed_config_fails_loudly(runs):
    changed = TrainConfig(**{**runs["config"].to_dict(), "lr": 5e-3})
    with pytest.raises(ValueError, match="TrainConfig changed.*'lr'"):
        run(runs["root"] / "straight", runs["vocab"], config=changed)
    # log/save cadence and the loader's processes may change on resume.
    cadence = TrainConfig(**{**runs["config"].to_dict(), "log_every": 7, "keep_last": 3,
                             "num_workers": 2 - runs["config"].num_workers, "prefetch_factor": 3})
    assert run(runs["root"] / "straight", runs["vocab"], config=cadence)[0].step == 30


def test_weight_decay_groups_skip_biases_and_norms():
    from ofasys.training.trainer import param_groups

    model = FakeModel()
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["embed.weight", "mix.weight", "out.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["mix.bias", "norm.bias", "norm.weight"]


def test_batch_to_casts_every_modalitys_float_input_and_no_ids_or_masks():
    """bf16 training: pixels and fbank frames (any modality's float tensor) take the engine's
    dtype; token ids, masks and integer modality tensors keep theirs."""
    from ofasys.data.batch import TOKENS, Batch, EncoderSegment
    from ofasys.training.trainer import _batch_to

    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    batch = Batch(task="t", keys=["a", "b"], decoder_input=torch.ones(2, 2, dtype=torch.long), segments=[
        EncoderSegment(TOKENS, ids, mask),
        EncoderSegment("IMAGE", torch.rand(2, 3, 8, 8)),
        EncoderSegment("AUDIO", torch.rand(2, 5, 80), torch.ones(2, 5, dtype=torch.bool)),
        EncoderSegment("VIDEO", torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8)),
    ])
    out = _batch_to(batch, torch.device("cpu"), torch.bfloat16)
    assert [s.tensor.dtype for s in out.segments] == [torch.long, torch.bfloat16, torch.bfloat16, torch.uint8]
    assert out.segments[0].mask.dtype == out.segments[2].mask.dtype == torch.bool
    assert out.decoder_input.dtype == torch.long
