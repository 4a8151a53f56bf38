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
from ofasys.data import task_data as task_data_module
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
                  log_every=2, save_every=3, num_workers=2)


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


def counting(log: Path, real):
    """`real`, recording the process and file of each call in `log` (forked workers inherit a patch
    with it, so a call in a worker is recorded too)."""

    def wrapper(path):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {Path(path).name}\n")
        return real(path)

    return wrapper


def test_shards_are_hashed_and_indexed_once_before_training_never_by_a_worker(shards, tmp_path, monkeypatch):
    hashes, indexes = tmp_path / "hashes.txt", tmp_path / "indexes.txt"

    vocab = UnifiedVocab.load(shards / "vocab.json")
    tasks = load_tasks(shards / "shards", vocab)  # construction hashes the lengths files; not counted
    monkeypatch.setattr(manifest_module, "sha256_file", counting(hashes, manifest_module.sha256_file))
    monkeypatch.setattr(task_data_module, "index_shard", counting(indexes, task_data_module.index_shard))
    workers: list[int] = []
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    trainer = Trainer(build_model(model_config, 0), tasks, None, CFG, tmp_path / "run",
                      lambda step, m: workers.extend(trainer._loader.worker_pids()))
    result = trainer.fit()
    assert result.step == CFG.max_steps and len(set(workers)) == 2 and os.getpid() not in workers
    shard_files = sorted(p.name for t in tasks for p in (t.root / s["path"] for s in t._shards))
    hashed = [line.split() for line in hashes.read_text().splitlines()]
    assert sorted(name for _, name in hashed) == sorted(shard_files + ["train-lengths.npy"] * 2)  # each once
    assert {int(pid) for pid, _ in hashed} == {os.getpid()}  # all before training, in this process
    indexed = [line.split() for line in indexes.read_text().splitlines()]
    assert sorted(name for _, name in indexed) == shard_files  # once, before the workers were forked
    assert {int(pid) for pid, _ in indexed} == {os.getpid()}


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


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (VmRSS: its private and shared pages in RAM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.slow
def test_memory_stays_flat_over_a_thousand_steps_with_two_workers(shards, tmp_path):
    """RSS of the training process, and of it plus its two loader workers, after 1,000 steps is within
    10% of the same after 100 (a loader that kept batches, indexes or shared-memory blocks alive per
    step would grow by the hundreds of batches it made in between)."""
    measured: dict[int, tuple[int, int]] = {}
    holder: dict = {}

    def log_fn(step, metrics):
        if step in (100, 1000):
            workers = holder["trainer"]._loader.worker_pids()
            assert len(workers) == 2
            main = rss_bytes()
            measured[step] = (main, main + sum(rss_bytes(pid) for pid in workers))

    config = TrainConfig(**{**CFG.to_dict(), "max_steps": 1000, "grad_accum": 1, "log_every": 100, "save_every": 0,
                            "warmup_steps": 10, "num_workers": 2})
    vocab = UnifiedVocab.load(shards / "vocab.json")
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    holder["trainer"] = Trainer(build_model(model_config, 0), load_tasks(shards / "shards", vocab), None, config,
                                tmp_path / "run", log_fn)
    assert holder["trainer"].fit().step == 1000
    (main_100, all_100), (main_1000, all_1000) = measured[100], measured[1000]
    print(f"\nRSS after 100 / 1000 steps: training process {main_100 / 2**20:.1f} / {main_1000 / 2**20:.1f} MiB, "
          f"with its 2 workers {all_100 / 2**20:.1f} / {all_1000 / 2**20:.1f} MiB")
    assert main_1000 <= 1.10 * main_100
    assert all_1000 <= 1.10 * all_100
