"""`ofasys.Task` on the real parts: parse at construction, materialise, load, train."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ofasys
from ofasys import InstructionError
from tests.support.images import random_png

WORDS = "zero one two three four five six seven eight nine".split()
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
TEST_KEY = "ofasys-test-checkpoint-key-0123456789abcdef"


png = random_png


@pytest.fixture
def caption_data(tmp_path):
    """(raw parquet path, vocab path) of a 12-row caption task."""
    from ofasys.text_tokenizer import train_text_tokenizer
    from ofasys.vocab import UnifiedVocab

    rng = np.random.default_rng(0)
    phrases = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 5)))) for _ in range(12)]
    tok = train_text_tokenizer(phrases + ["what does the image describe?"], vocab_size=300)
    vocab_path = tmp_path / "vocab.json"
    UnifiedVocab.build(tok, num_bins=8).save(vocab_path)
    raw = tmp_path / "caption.parquet"
    pq.write_table(pa.table({"img": [png(i) for i in range(12)], "cap": phrases}), raw)
    return raw, vocab_path


def test_lazy_export_is_the_task_class():
    from ofasys.task import Task

    assert ofasys.Task is Task


def test_declaring_a_task_does_not_import_torch():
    code = ("import sys, ofasys; ofasys.Task('cap', %r); "
            "print(sorted(m for m in ('torch', 'pyarrow', 'deepspeed') if m in sys.modules))") % CAPTION
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_malformed_instruction_raises_at_construction_with_position():
    with pytest.raises(InstructionError) as info:
        ofasys.Task("boxes", "[IMAGE:img] where is [BOUNDING_BOX:b]? -> [TEXT:t]")
    assert info.value.column == len("[IMAGE:img] where is [")
    assert "did you mean BOX?" in str(info.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "my-task"}, "name"),
    ({"name": "1st"}, "name"),
    ({"weight": -0.5}, "weight"),
    ({"weight": float("nan")}, "weight"),
    ({"weight": float("inf")}, "weight"),
    ({"image_size": 0}, "image_size"),
    ({"image_size": 16.0}, "image_size"),
])
def test_invalid_fields_name_the_field(kwargs, field):
    args = {"name": "caption", "instruction": CAPTION, **kwargs}
    with pytest.raises(ValueError, match=field):
        ofasys.Task(**args)


def test_task_is_frozen_and_compares_by_declaration():
    a, b = ofasys.Task("caption", CAPTION, weight=0.5), ofasys.Task("caption", CAPTION, weight=0.5)
    assert a == b and hash(a) == hash(b) and a.parsed.source == CAPTION
    with pytest.raises(AttributeError):
        a.weight = 2.0  # type: ignore[misc]


def test_materialise_load_and_train(tmp_path, caption_data, monkeypatch):
    from ofasys.model import ModelConfig, build_model
    from ofasys.training import TrainConfig, Trainer
    from ofasys.training.checkpoint_integrity import KEY_ENV
    from ofasys.vocab import UnifiedVocab

    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    raw, vocab_path = caption_data
    vocab = UnifiedVocab.load(vocab_path)
    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    task = ofasys.Task("caption", CAPTION, weight=1.0, image_size=16)
    report = task.materialise({"train": raw}, vocab_path, tmp_path / "shards", shard_samples=5,
                              model=model_config, progress=False)
    assert report.splits["train"].num_samples == 12 and len(report.splits["train"].shards) == 3

    data = task.load(tmp_path / "shards", "train", vocab_path)
    assert data.name == "caption" and len(data) == 12

    cfg = TrainConfig(max_steps=2, max_tokens=256, max_batch_size=4, pool_size=8, warmup_steps=1, log_every=1,
                      save_every=2)
    logs = []
    result = Trainer(build_model(model_config, cfg.seed), [data], {task.name: task.weight}, cfg, tmp_path / "run",
                     lambda step, m: logs.append((step, m)), vocab_path=vocab_path).fit()
    assert result.step == 2 and [s for s, _ in logs] == [1, 2]
    assert all(np.isfinite(m["train/loss"]) for _, m in logs)

    out = ofasys.OFASys.from_pretrained(result.export_dir).inference(task.instruction, data={"img": png(99)},
                                                                     max_new_tokens=4)
    assert isinstance(out.text, str)


def test_load_refuses_shards_of_another_declaration(tmp_path, caption_data):
    raw, vocab_path = caption_data
    ofasys.Task("caption", CAPTION, image_size=16).materialise({"train": raw}, vocab_path, tmp_path / "s",
                                                               progress=False)
    other = ofasys.Task("caption", CAPTION.replace("describe?", "show?"), image_size=16)
    with pytest.raises(ValueError, match="another declaration"):
        other.load(tmp_path / "s", "train", vocab_path)
    with pytest.raises(ValueError, match="another declaration"):
        ofasys.Task("captions", CAPTION).load(tmp_path / "s", "train", vocab_path)
