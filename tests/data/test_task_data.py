import io
import pickle

import numpy as np
import pytest
import webdataset as wds

from ofasys.data.manifest import ManifestError, ShardIntegrityError, verify_manifest
from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab, VocabMismatchError

CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"


@pytest.fixture
def task_dir(tmp_path, png, parquet, vocab_path):
    n = 11
    imgs = [png(12 + i, 10, seed=i) for i in range(n)]
    imgs[2] = b"broken"
    caps = [" ".join(["one", "two", "three", "four"][: 1 + i % 4]) for i in range(n)]
    splits = {"train": parquet(tmp_path / "raw/train.parquet", {"img": imgs, "cap": caps})}
    materialise_task(
        MaterialiseConfig(
            task="caption", instruction=CAPTION, raw_splits=splits, vocab_path=vocab_path, out_dir=tmp_path / "out",
            image_size=8, shard_samples=4, reject_budget=0.2, progress=False,
        )
    )
    return tmp_path / "out"


def test_random_access_matches_stock_webdataset(task_dir, vocab):
    td = ShardTaskData(task_dir / "manifest.json", "train", vocab)
    assert td.name == "caption" and len(td) == 10
    stock = list(wds.WebDataset(sorted(str(p) for p in task_dir.glob("train-*.tar")), shardshuffle=False))
    assert len(stock) == 10
    for i in [7, 0, 9, 3, 4, 1]:  # out of order, across shards
        s = td.get(i)
        ref = stock[i]
        assert s.key == ref["__key__"]
        assert set(s.arrays) == {"img.image", "cap.text"}
        for name, arr in s.arrays.items():
            assert np.array_equal(arr, np.load(io.BytesIO(ref[f"{name}.npy"])))
        assert s.meta["row"] == int(s.key.split("-")[1])
    assert td.get(-1).key == stock[-1]["__key__"]
    with pytest.raises(IndexError):
        td.get(10)
    # [encoder, decoder] positions: an 8x8 image is one position of the default conv stem, then
    # <BOS> prompt <EOS>; the decoder input is <bos> + the caption
    assert td.lengths.dtype == np.int32 and td.lengths.shape == (10, 2)
    encoder = 1 + 1 + len(vocab.encode_text("what does the image describe?")) + 1
    assert td.lengths[:, 0].tolist() == [encoder] * 10
    assert td.lengths[:, 1].tolist() == [1 + len(td.get(i).arrays["cap.text"]) for i in range(10)]


def test_tampered_shard_fails_sha256_on_first_open(task_dir, vocab):
    path = task_dir / "train-000001.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF
    path.write_bytes(bytes(data))
    td = ShardTaskData(task_dir / "manifest.json", "train", vocab)
    td.get(0)  # shard 0 is fine
    with pytest.raises(ShardIntegrityError, match="sha256"):
        td.get(5)
    with pytest.raises(ShardIntegrityError, match="train-000001.tar"):
        verify_manifest(task_dir / "manifest.json")
    ShardTaskData(task_dir / "manifest.json", "train", vocab, verify=False).get(0)


def test_vocab_fingerprint_mismatch_names_both(task_dir, vocab):
    other = UnifiedVocab.build(train_text_tokenizer(["something else entirely"] * 5, vocab_size=300), num_bins=16)
    with pytest.raises(VocabMismatchError) as e:
        ShardTaskData(task_dir / "manifest.json", "train", other)
    assert vocab.fingerprint in str(e.value) and other.fingerprint in str(e.value)


def test_pickles_for_loader_workers(task_dir, vocab):
    td = ShardTaskData(task_dir / "manifest.json", "train", vocab)
    td.get(0)
    clone = pickle.loads(pickle.dumps(td))
    assert np.array_equal(clone.get(6).arrays["img.image"], td.get(6).arrays["img.image"])
    td.close()


def test_collate_through_task_data(task_dir, vocab):
    td = ShardTaskData(task_dir / "manifest.json", "train", vocab)
    batch = td.collate([td.get(i) for i in range(4)], np.random.default_rng(0), train=True)
    assert batch.task == "caption" and len(batch) == 4
    assert [s.kind for s in batch.segments] == ["IMAGE", "tokens"]
    assert batch.segments[0].tensor.shape == (4, 3, 8, 8)
    gen = td.collate_for_generation([td.get(0), td.get(1)])
    assert gen.decoder_input.tolist() == [[vocab.bos], [vocab.bos]] and gen.target is None
    plan = td.plan(td.get(0))
    assert plan.decode(vocab.encode_text("two three") + [vocab.eos], td.get(0).meta) == {"cap": "two three"}


def test_shards_of_the_older_format_are_refused_with_the_fix(task_dir, vocab):
    """Format 1 stored one slot-token total per sample: budgets on it do not bound memory, so such
    shards are refused, telling to re-materialise, rather than batched by the wrong lengths."""
    import json

    manifest_path = task_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    lengths_path = task_dir / manifest["splits"]["train"]["lengths_file"]
    np.save(lengths_path, np.load(lengths_path)[:, 1])  # one number per sample, as format 1 wrote
    with pytest.raises(ManifestError, match=r"old-format lengths file .*re-run materialisation \(`dvc repro`"):
        ShardTaskData(manifest_path, "train", vocab, verify=False)
    manifest["format"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"manifest format 1, this code reads 2; .*re-run materialisation"):
        ShardTaskData(manifest_path, "train", vocab)
