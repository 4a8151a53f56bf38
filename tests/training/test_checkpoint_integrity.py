"""Resume loads only checkpoint files this trainer signed; anything else is refused before unpickling.

Every attack plants a pickle whose unpickling creates a marker file; torch.load(weights_only=False),
which DeepSpeed uses, would run it. The marker must never appear.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
import torch

from ofasys.training import TrainConfig, Trainer
from ofasys.training.checkpoint_integrity import (INTEGRITY_FILE, KEY_ENV, CheckpointIntegrityError,
                                                  checkpoint_key, load_or_create_key, sign_checkpoint,
                                                  weights_only_loads)
from ofasys.training.checkpoints import checkpoint_tags

from .fakes import FakeModel, make_tasks

CFG = TrainConfig(max_steps=4, max_tokens=128, max_batch_size=8, pool_size=32, lr=1e-2, warmup_steps=1,
                  log_every=2, save_every=2, seed=4)
MODEL_FILE = "mp_rank_00_model_states.pt"


class Planted:
    """Unpickling this creates `marker`: proof that a planted file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": Planted(marker)}, path)


def fit(out: Path, config: TrainConfig = CFG):
    return Trainer(FakeModel(), make_tasks(), None, config, out).fit()


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    """A finished run whose checkpoints/ds holds step2 and step4 (latest), signed with the test key."""
    out = tmp_path_factory.mktemp("signed") / "run"
    result = fit(out)
    assert checkpoint_tags(result.checkpoint_dir) == [(2, "step2"), (4, "step4")]
    return out


@pytest.fixture
def run_copy(signed_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(signed_run, out)
    return out, out / "ds", tmp_path / "MARKER"


def refused(out: Path, marker: Path, match: str) -> str:
    with pytest.raises(CheckpointIntegrityError, match=match) as info:
        fit(out)
    assert not marker.exists(), "a planted pickle was unpickled"
    message = str(info.value)
    assert "\n" not in message and "to start training fresh" in message
    return message


def test_untouched_checkpoint_resumes(run_copy):
    out, ds, _ = run_copy
    record = (ds / INTEGRITY_FILE).read_text()
    assert '"tag": "step4"' in record and f"step4/{MODEL_FILE}" in record
    assert fit(out).resumed_from == 4


def test_tampered_checkpoint_file_is_refused(run_copy):
    out, ds, marker = run_copy
    plant(ds / "step4" / MODEL_FILE, marker)
    message = refused(out, marker, "was altered")
    assert str(ds / "step4" / MODEL_FILE) in message


def test_extra_file_dropped_into_the_checkpoint_is_refused(run_copy):
    out, ds, marker = run_copy
    plant(ds / "step4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    message = refused(out, marker, "was not written by this trainer")
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in message


def test_missing_checkpoint_file_is_refused(run_copy):
    out, ds, marker = run_copy
    (ds / "step4" / MODEL_FILE).unlink()
    assert str(ds / "step4" / MODEL_FILE) in refused(out, marker, "is missing")


def test_rewritten_latest_is_refused(run_copy):
    out, ds, marker = run_copy
    plant(ds / "step999" / MODEL_FILE, marker)  # DeepSpeed would load this tag if `latest` were trusted
    (ds / "latest").write_text("step999")
    refused(out, marker, "latest was altered: it names 'step999'")
    (ds / "latest").write_text("step2")  # even an older checkpoint of the same run: not what was signed
    refused(out, marker, "latest was altered")


def test_record_signed_with_another_key_is_refused(run_copy):
    out, ds, marker = run_copy
    plant(ds / "step4" / MODEL_FILE, marker)
    sign_checkpoint(ds, "step4", b"k" * 32)  # a forger who does not have this machine's key
    refused(out, marker, "was not written with this machine's checkpoint key")


def test_unsigned_checkpoint_is_refused(run_copy):
    out, ds, marker = run_copy
    (ds / INTEGRITY_FILE).unlink()
    refused(out, marker, f"no {INTEGRITY_FILE}")


def test_a_validly_signed_pickle_still_cannot_run_code(run_copy):
    """Second layer: a file signed with the right key (a writer racing the load, a leaked key) is
    loaded by torch's weights-only unpickler, which refuses to call anything."""
    out, ds, marker = run_copy
    plant(ds / "step4" / MODEL_FILE, marker)
    sign_checkpoint(ds, "step4", checkpoint_key(None))
    with pytest.raises(RuntimeError, match="weights-only loader refuses .*io.open"):
        fit(out)
    assert not marker.exists()


def test_loads_are_weights_only(tmp_path):
    """The second layer: even a file that passed verification cannot run code when loaded."""
    marker = tmp_path / "MARKER"
    plant(tmp_path / "x.pt", marker)
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "x.pt", weights_only=False)  # the argument DeepSpeed passes
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored afterwards


def test_key_file_is_created_private_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    key = checkpoint_key(tmp_path)
    path = tmp_path / ".cache" / "ofasys" / "checkpoint.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 32
    assert checkpoint_key(tmp_path) == key == load_or_create_key(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.key"]  # no temp file left
    path.chmod(0o644)
    with pytest.raises(CheckpointIntegrityError, match="chmod 600"):
        checkpoint_key(tmp_path)


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "x" * 40)
    assert checkpoint_key(None) == b"x" * 40
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(CheckpointIntegrityError, match=f"{KEY_ENV} must hold at least 32 characters"):
        checkpoint_key(None)


def test_a_kill_between_record_and_latest_still_resumes_from_the_signed_record(run_copy):
    """`latest` is written after the record: a process killed in between leaves only the record."""
    out, ds, _ = run_copy
    (ds / "latest").unlink()
    assert fit(out).resumed_from == 4
