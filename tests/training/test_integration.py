"""The trainer on the real pieces: materialised shards -> ShardTaskData -> UniversalModel -> export."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.model import ModelConfig, UniversalModel, build_model
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.training import TrainConfig, Trainer, load_pretrained_config, load_pretrained_state
from ofasys.vocab import UnifiedVocab
from tests.support.images import random_png

WORDS = "zero one two three four five six seven eight nine".split()
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
INFILL = '<BOS> what is the complete text of " [TEXT:text,mask_ratio=0.3] "? <EOS> -> <BOS> [TEXT:text] <EOS>'


png = random_png


def test_train_real_model_on_real_shards(tmp_path):
    rng = np.random.default_rng(0)
    phrases = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(40)]
    tok = train_text_tokenizer(phrases + ["what does the image describe?", "what is the complete text of"],
                               vocab_size=300)
    vocab_path = tmp_path / "vocab.json"
    vocab = UnifiedVocab.build(tok, num_bins=8)
    vocab.save(vocab_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"img": [png(i) for i in range(24)], "cap": phrases[:24]}), raw / "caption.parquet")
    pq.write_table(pa.table({"text": phrases}), raw / "infill.parquet")
    tasks = []
    for name, instruction in (("caption", CAPTION), ("infill", INFILL)):
        out = tmp_path / "shards" / name
        materialise_task(MaterialiseConfig(task=name, instruction=instruction,
                                           raw_splits={"train": str(raw / f"{name}.parquet")},
                                           vocab_path=str(vocab_path), out_dir=str(out), image_size=16,
                                           shard_samples=10, progress=False))
        tasks.append(ShardTaskData(out / "manifest.json", "train", vocab))

    model_config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                               ffn_dim=64, adaptors={"IMAGE": {"stem_channels": 16}}, max_positions=128)
    cfg = TrainConfig(max_steps=6, max_tokens=256, max_batch_size=8, pool_size=16, warmup_steps=2,
                      log_every=2, save_every=3)
    model = build_model(model_config, cfg.seed)
    logs = []
    result = Trainer(model, tasks, {"caption": 0.5, "infill": 0.5}, cfg, tmp_path / "run",
                     lambda step, m: logs.append((step, m)), vocab_path=vocab_path).fit()
    assert result.step == 6 and [s for s, _ in logs] == [2, 4, 6]
    assert all(np.isfinite(m["train/loss"]) for _, m in logs)
    assert {r.task for r in result.history} == {"caption", "infill"}

    config = load_pretrained_config(result.export_dir)
    assert config["vocab_fingerprint"] == vocab.fingerprint
    assert config["model"] == model_config.to_dict()
    assert config["tasks"]["infill"]["instruction"] == INFILL
    reloaded = UniversalModel(ModelConfig.from_dict(config["model"]))
    reloaded.load_state_dict(load_pretrained_state(result.export_dir), strict=True)
    assert torch.equal(reloaded.embed_tokens.weight, model.embed_tokens.weight)
