"""Validation during training: per-task valid loss on a schedule, the best weights exported, early
stopping, and all of it surviving a kill and resume exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ofasys.training import TrainConfig, Trainer, load_pretrained_state
from ofasys.training.validation import BEST_WEIGHTS, BestSoFar, _batches

from .fakes import FakeModel, FakeTaskData, make_tasks, make_vocab
from .test_trainer import CFG, WEIGHTS, Crash

VALID_CFG = dataclasses.replace(CFG, valid_every=5, valid_samples=16)


def valid_tasks():
    return [FakeTaskData(name, 20, seed=100 + k) for k, name in enumerate(WEIGHTS)]


def run(out: Path, vocab: Path, config: TrainConfig = VALID_CFG, crash_at: int | None = None, valid=True):
    logs = []

    def log_fn(step, metrics):
        logs.append((step, metrics))
        if step == crash_at and "valid/loss" in metrics:
            raise Crash(f"simulated kill at step {step}")

    trainer = Trainer(FakeModel(dropout=0.1), make_tasks(), WEIGHTS, config, out, log_fn, vocab_path=vocab,
                      model_config={"d": 16}, record_samples=True, valid_tasks=valid_tasks() if valid else ())
    return trainer.fit(), logs


def validations(logs):
    return [(step, m) for step, m in logs if "valid/loss" in m]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    vocab = root / "vocab.json"
    make_vocab(vocab)
    straight, logs = run(root / "straight", vocab)
    plain, _ = run(root / "plain", vocab, config=CFG, valid=False)
    with pytest.raises(Crash):
        run(root / "crashed", vocab, crash_at=20)  # after the step-20 validation, before the step-20 save
    resumed, resumed_logs = run(root / "crashed", vocab)
    return dict(root=root, vocab=vocab, straight=straight, logs=logs, plain=plain, resumed=resumed,
                resumed_logs=resumed_logs)


def test_every_task_is_validated_on_schedule_and_the_mean_selects(runs):
    checks = validations(runs["logs"])
    assert [step for step, _ in checks] == [5, 10, 15, 20, 25, 30]
    for _, m in checks:
        per_task = [m[f"valid/loss/{t}"] for t in WEIGHTS]
        assert m["valid/loss"] == pytest.approx(sum(per_task) / len(per_task))
    best_step, best = min(((s, m["valid/loss"]) for s, m in checks), key=lambda x: (x[1], x[0]))
    assert runs["straight"].best_step == best_step and runs["straight"].best_valid_loss == pytest.approx(best)
    assert checks[-1][1]["valid/best_step"] == best_step


def test_validation_leaves_the_training_sequence_alone(runs):
    a, b = runs["straight"].history, runs["plain"].history
    assert [(r.step, r.task, r.indices, r.loss) for r in a] == [(r.step, r.task, r.indices, r.loss) for r in b]


def test_the_export_is_the_best_validation_weights(runs):
    from safetensors.torch import load_file

    straight, plain = runs["straight"], runs["plain"]
    exported = load_pretrained_state(straight.export_dir)
    best = load_file(str(straight.checkpoint_dir / BEST_WEIGHTS))
    assert all(torch.equal(exported[k], best[k].float()) for k in best)
    last = load_pretrained_state(plain.export_dir)  # same training, no selection: the last weights
    same_as_last = all(torch.equal(exported[k], last[k]) for k in last)
    assert same_as_last == (straight.best_step == CFG.max_steps)


def test_a_run_killed_after_a_validation_resumes_to_the_same_best_and_export(runs):
    straight, resumed = runs["straight"], runs["resumed"]
    assert resumed.resumed_from == 15 and resumed.best_step == straight.best_step
    assert resumed.best_valid_loss == straight.best_valid_loss
    after = [(s, m["valid/loss"]) for s, m in validations(runs["logs"]) if s > 15]
    assert [(s, m["valid/loss"]) for s, m in validations(runs["resumed_logs"])] == after
    assert (straight.export_dir / "model.safetensors").read_bytes() == \
        (resumed.export_dir / "model.safetensors").read_bytes()


def test_early_stopping_stops_and_stays_stopped(runs, tmp_path):
    cfg = dataclasses.replace(VALID_CFG, early_stop_patience=2, min_delta=1e6)  # nothing ever improves enough
    stopped, logs = run(tmp_path / "early", runs["vocab"], config=cfg)
    assert stopped.stopped_early and stopped.step == 15 and stopped.best_step == 5
    assert [s for s, _ in validations(logs)] == [5, 10, 15]
    again, logs = run(tmp_path / "early", runs["vocab"], config=cfg)  # a re-run resumes a finished run
    assert again.stopped_early and again.step == 15 and again.history == [] and validations(logs) == []


def test_validation_needs_valid_tasks_and_patience_needs_validation(runs, tmp_path):
    with pytest.raises(ValueError, match="no valid_tasks were given"):
        Trainer(FakeModel(), make_tasks(), WEIGHTS, VALID_CFG, tmp_path, valid_tasks=())
    with pytest.raises(ValueError, match="early_stop_patience needs validation"):
        dataclasses.replace(CFG, early_stop_patience=3)


def test_ranks_run_the_same_number_of_batches():
    for count, world, bs in [(10, 2, 3), (1, 2, 4), (7, 3, 2), (0, 2, 2)]:
        shares = [_batches(count, r, world, bs) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        seen = sorted(i for s in shares for b in s for i in b if i is not None)
        assert seen == list(range(count))


def test_best_so_far_counts_stale_validations_and_round_trips():
    best = BestSoFar()
    assert best.update(5, 2.0) and not best.update(10, 2.0) and best.update(15, 1.0, min_delta=0.5)
    assert not best.update(20, 0.9, min_delta=0.5) and best.stale == 1 and best.step == 15
    assert BestSoFar.from_json(best.to_json()) == best and BestSoFar.from_json(None) == BestSoFar()
