"""The training loader on real shards: worker processes change no loss, shards are hashed once before
training and never by a worker, a corrupted shard stops the run before its first step, the look-ahead
cannot silently diverge from the sampler, and the workers stop with training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ofasys.data import manifest as manifest_module
from ofasys.data.manifest import ShardIntegrityError
from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.model import ModelConfig, build_model
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.training import TrainConfig, Trainer
from ofasys.training.loader import LoaderDesyncError, TrainLoader
from ofasys.training.sampler import WeightedMultitaskSampler
from ofasys.vocab import UnifiedVocab
from tests.support.images import random_png

from .fakes import make_tasks

WORDS = "zero one two three four five six seven eight nine".split()
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
INFILL = '<BOS> what is the complete text of " [TEXT:text,mask_ratio=0.3] "? <EOS> -> <BOS> [TEXT:text] <EOS>'
CFG = TrainConfig(max_steps=6, max_tokens=256, max_batch_size=8, pool_size=16, warmup_steps=2, grad_accum=2,
                  log_every=2, save_every=3)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two materialised tasks (an image one, and one with stream-time masking) and their vocab."""
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    phrases = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(40)]
    tok = train_text_tokenizer(phrases + ["what does the image describe?", "what is the complete text of"],
                               vocab_size=300)
    vocab = UnifiedVocab.build(tok, num_bins=8)
    vocab.save(root / "vocab.json")
    raw = root / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"img": [random_png(i) for i in range(24)], "cap": phrases[:24]}),
                   raw / "caption.parquet")
    pq.write_table(pa.table({"text": phrases}), raw / "infill.parquet")
    for name, instruction in (("caption", CAPTION), ("infill", INFILL)):
        materialise_task(MaterialiseConfig(task=name, instruction=instruction,
                                           raw_splits={"train": str(raw / f"{name}.parquet")},
                                           vocab_path=str(root / "vocab.json"), out_dir=str(root / "shards" / name),
                                           image_size=16, shard_samples=10, progress=False))
    return root


def load_tasks(shards_dir: Path, vocab: UnifiedVocab) -> list[ShardTaskData]:
    return [ShardTaskData(shards_dir / name / "manifest.json", "train", vocab) for name in ("caption", "infill")]


def train(root: Path, out: Path, config: TrainConfig, shards_dir: Path | None = None, log_fn=None):
    vocab = UnifiedVocab.load(root / "vocab.json")
    tasks = load_tasks(shards_dir or root / "shards", vocab)
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    trainer = Trainer(build_model(model_config, config.seed), tasks, {"caption": 0.5, "infill": 0.5}, config, out,
                      log_fn, record_samples=True)
    return trainer, trainer.fit()


def test_worker_processes_train_bit_identically_to_the_training_thread(shards, tmp_path):
    _, inline = train(shards, tmp_path / "inline", TrainConfig(**{**CFG.to_dict(), "num_workers": 0}))
    _, workers = train(shards, tmp_path / "workers", TrainConfig(**{**CFG.to_dict(), "num_workers": 2}))
    assert {r.task for r in inline.history} == {"caption", "infill"}
    assert [(r.step, r.micro, r.task, r.indices) for r in workers.history] == \
        [(r.step, r.micro, r.task, r.indices) for r in inline.history]
    assert [r.loss for r in workers.history] == [r.loss for r in inline.history]  # bit-identical


def test_shards_are_hashed_once_before_training_and_never_by_a_worker(shards, tmp_path, monkeypatch):
    hashes = tmp_path / "hashes.txt"
    real = manifest_module.sha256_file

    def counting(path):  # forked workers inherit the patch, so a hash in a worker is recorded too
        with open(hashes, "a") as f:
            f.write(f"{os.getpid()} {Path(path).name}\n")
        return real(path)

    vocab = UnifiedVocab.load(shards / "vocab.json")
    tasks = load_tasks(shards / "shards", vocab)  # construction hashes the lengths files; not counted
    monkeypatch.setattr(manifest_module, "sha256_file", counting)
    workers: list[int] = []
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    trainer = Trainer(build_model(model_config, 0), tasks, None, CFG, tmp_path / "run",
                      lambda step, m: workers.extend(trainer._loader.worker_pids()))
    result = trainer.fit()
    assert result.step == CFG.max_steps and len(set(workers)) == 2 and os.getpid() not in workers
    lines = [line.split() for line in hashes.read_text().splitlines()]
    expected = sorted(p.name for t in tasks for p in (t.root / s["path"] for s in t._shards)) + \
        ["train-lengths.npy", "train-lengths.npy"]
    assert sorted(name for _, name in lines) == sorted(expected)  # every file once
    assert {int(pid) for pid, _ in lines} == {os.getpid()}  # all before training, in this process


def test_a_corrupted_shard_stops_the_run_before_its_first_step(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards / "shards", copy)
    shard = copy / "infill" / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    logs: list = []
    with pytest.raises(ShardIntegrityError, match=r"infill/train-000002\.tar: sha256 .* re-run the materialise"):
        train(shards, tmp_path / "run", CFG, copy, lambda step, m: logs.append(step))
    assert logs == [] and not (tmp_path / "run").exists()


def test_the_loader_refuses_a_batch_the_sampler_did_not_draw():
    tasks = make_tasks()
    sampler = WeightedMultitaskSampler(tasks, max_tokens=128, max_batch_size=8, pool_size=32, seed=3)
    with TrainLoader({t.name: t for t in tasks}, sampler, seed=3, rank=0, start_step=0, max_steps=10, grad_accum=1,
                     num_workers=2, prefetch_factor=2) as loader:
        picked, batch = loader.next(0, 0)
        assert batch.keys == [f"train-{i:09d}" for i in picked.indices] and batch.task == picked.task
        assert batch.decoder_input.is_shared()  # came through shared memory, not a pickled copy
        sampler.next_batch()  # the training sampler moves on without the loader
        with pytest.raises(LoaderDesyncError, match="diverged"):
            loader.next(1, 0)


def test_workers_stop_when_training_fails(shards, tmp_path):
    class Crash(RuntimeError):
        pass

    pids: list[int] = []
    holder: dict = {}

    def log_fn(step, metrics):
        pids.extend(holder["trainer"]._loader.worker_pids())
        raise Crash

    vocab = UnifiedVocab.load(shards / "vocab.json")
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    holder["trainer"] = trainer = Trainer(build_model(model_config, 0), load_tasks(shards / "shards", vocab), None,
                                          CFG, tmp_path / "run", log_fn)
    with pytest.raises(Crash):
        trainer.fit()
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # stopped and reaped, not a zombie
            os.kill(pid, 0)


@pytest.mark.parametrize("field, value", [("num_workers", -1), ("prefetch_factor", 0)])
def test_loader_fields_are_validated(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**{field: value})
