"""A task that stores images as VQ codes: shards hold code ids, the manifest records the tokenizer's
fingerprint and grid, the collator then generates exactly that grid, and a rerun is byte-identical."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from tests.support.vq import TINY_VQ, save_tiny

INFILL = ('<BOS> complete " [IMAGE:img,preprocess=image_vqgan,mask_ratio=0.3] " <EOS> '
          '-> <BOS> [IMAGE:img,preprocess=image_vqgan] <EOS>')


@pytest.fixture()
def setup(tmp_path, png, parquet):
    tok = train_text_tokenizer(["complete the image", "draw a square"] * 5, vocab_size=280)
    vocab_path = tmp_path / "vocab.json"
    UnifiedVocab.build(tok, num_bins=8, num_codes=TINY_VQ["codebook_size"]).save(vocab_path)
    vq_path = tmp_path / "vq.safetensors"
    fingerprint = save_tiny(vq_path)
    raw = {}
    for split, n in (("train", 6), ("valid", 2)):
        images = [png(20, 12, seed=i) for i in range(n)]
        if split == "train":
            images[3] = images[3][:40]  # truncated: rejected, the rest goes on
        raw[split] = parquet(tmp_path / "raw" / f"{split}.parquet", {"img": images})

    def run(out: str, **kw):
        return materialise_task(MaterialiseConfig(task="fill", instruction=INFILL, raw_splits=raw, vocab_path=vocab_path,
                                                  out_dir=tmp_path / out, reject_budget=0.5, progress=False,
                                                  image_codes_path=vq_path, **kw))

    return run, vocab_path, fingerprint, tmp_path


def test_codes_are_stored_recorded_and_generated_on_the_tokenizers_grid(setup):
    run, vocab_path, fingerprint, root = setup
    report = run("a")
    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["assets"]["image_codes"] == {"fingerprint": fingerprint, "grid": 4, "image_size": 16,
                                                 "codebook_size": TINY_VQ["codebook_size"]}
    assert [s["member"] for s in manifest["slots"]] == ["img.image_codes.npy"]
    assert report.splits["train"].num_rejects == 1
    vocab = UnifiedVocab.load(vocab_path)
    data = ShardTaskData(report.manifest_path, "train", vocab)
    sample = data.get(0)
    ids = sample.arrays["img.image_codes"]
    assert ids.shape == (16,) and all(int(t) in vocab.code_range for t in ids)
    assert sample.meta["refs"]["img"] == [int(t) - vocab.code_range.start for t in ids]
    plan = data.plan(sample)
    assert sum(step.length for step in plan.steps if step.kind == "fixed") == 16


def test_a_rerun_is_byte_identical(setup):
    run, *_ , root = setup
    run("a")
    run("b")
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / d).iterdir())}  # noqa: E731
    assert digest("a") == digest("b")


def test_without_the_vq_file_it_stops_before_any_row(setup, tmp_path):
    run, *_ = setup
    with pytest.raises(ValueError, match="run `dvc repro vq`"):
        run("c", **{"image_codes_path": None}) if False else materialise_task(MaterialiseConfig(
            task="fill", instruction=INFILL, raw_splits={"train": str(tmp_path / "raw" / "train.parquet")},
            vocab_path=tmp_path / "vocab.json", out_dir=tmp_path / "c", progress=False))
    assert not (tmp_path / "c").exists()
