import hashlib
import io
import json
import re
import subprocess
import tarfile

import numpy as np
import pytest

from ofasys.data.materialise import MaterialiseConfig, UnsupportedSlotError, materialise_task
from ofasys.data.rejects import RejectBudget, RejectBudgetExceeded, read_rejects
from ofasys.data.task_data import ShardTaskData
from ofasys.instruction import InstructionError

CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
GROUNDING = '[IMAGE:img] <BOS> which region does the text " [TEXT:query] " describe? <EOS> -> [BOX:region,add_bos,add_eos]'


def caption_task(tmp_path, png, parquet, *, train_rows=10, bad=True, **cfg):
    caps = [f"{['one', 'two', 'three'][i % 3]} {['four', 'five'][i % 2]}" for i in range(train_rows)]
    imgs = [png(20 + i, 30 - i, seed=i) for i in range(train_rows)]
    if bad:
        imgs[3] = b"definitely not an image"
        caps[5] = "  "
    splits = {
        "train": parquet(tmp_path / "raw/train.parquet", {"img": imgs, "cap": caps, "extra": list(range(train_rows))}),
        "valid": parquet(tmp_path / "raw/valid.parquet", {"img": [png(16, 16, 99)], "cap": ["six seven"], "extra": [0]}),
    }
    base = dict(
        task="caption",
        instruction=CAPTION,
        raw_splits=splits,
        out_dir=str(tmp_path / "out"),
        image_size=16,
        shard_samples=3,
        reject_budget=0.5,
        params_hash="abc",
        seed=7,
        progress=False,
    )
    base.update(cfg)
    return base


def test_caption_materialises_shards_manifest_and_rejects(tmp_path, png, parquet, vocab_path, vocab):
    cfg = MaterialiseConfig(vocab_path=str(vocab_path), **caption_task(tmp_path, png, parquet))
    report = materialise_task(cfg)
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == 2 and m["task"] == "caption" and m["instruction"] == CAPTION
    assert m["params_hash"] == "abc" and m["assets"] == {"vocab": vocab.fingerprint} and m["image_size"] == 16
    assert m["slots"] == [
        {"column": "img", "modality": "IMAGE", "member": "img.image.npy", "dtype": "uint8", "shape": [16, 16, 3], "side": "input", "attrs": {}},
        {"column": "cap", "modality": "TEXT", "member": "cap.text.npy", "dtype": "int32", "shape": [None], "side": "output", "attrs": {}},
    ]
    train = m["splits"]["train"]
    assert train["num_samples"] == 8 and train["num_rejects"] == 2
    assert [s["num_samples"] for s in train["shards"]] == [3, 3, 2]
    assert [s["path"] for s in train["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for s in train["shards"]:
        data = (out / s["path"]).read_bytes()
        assert s["bytes"] == len(data) and s["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(train["lengths"]) == {"encoder", "decoder"}
    assert all(set(train["lengths"][side]) == {"max", "mean", "p50", "p95"} for side in ("encoder", "decoder"))
    lengths = np.load(out / train["lengths_file"])
    assert lengths.dtype == np.int32 and lengths.shape == (8, 2)
    assert [train["lengths"]["encoder"]["max"], train["lengths"]["decoder"]["max"]] == lengths.max(0).tolist()
    assert m["splits"]["valid"]["num_samples"] == 1
    assert m["rejects"] == {"count": 2, "path": "rejects.jsonl"}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [
        {"split": "train", "row": 3, "column": "img", "reason": "image could not be decoded (UnidentifiedImageError)"},
        {"split": "train", "row": 5, "column": "cap", "reason": "empty text"},
    ]
    assert report.splits["train"].num_rows == 10 and report.splits["train"].num_samples == 8
    assert str(report).startswith("train 8/10 rows kept (2 rejected) in 3 shard(s); valid 1/1 rows kept")

    # stock tar lists the members; keys keep the raw row index (rows 3 and 5 are gone)
    names = subprocess.run(["tar", "-tf", str(out / "train-000001.tar")], capture_output=True, text=True, check=True).stdout.split()
    assert names == [
        "train-000000004.json", "train-000000004.img.image.npy", "train-000000004.cap.text.npy",
        "train-000000006.json", "train-000000006.img.image.npy", "train-000000006.cap.text.npy",
        "train-000000007.json", "train-000000007.img.image.npy", "train-000000007.cap.text.npy",
    ]
    with tarfile.open(out / "train-000000.tar") as tar:
        info = tar.getmember("train-000000000.json")
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
        meta = json.loads(tar.extractfile(info).read())
    shown = meta.pop("inputs")
    assert meta == {
        "task": "caption", "split": "train", "row": 0,
        "lengths": {"img.image.npy": 0, "cap.text.npy": len(vocab.encode_text("one four"))},
        "meta": {"img": {"width": 20, "height": 30}},
        "refs": {"cap": "one four"},
        "source": {"source": None, "source_row": None, "source_id": None},  # a hand-made raw parquet
    }
    assert list(shown) == ["img"] and re.fullmatch(r"<\d+ bytes>", shown["img"])  # an image cell of bytes


def test_stock_webdataset_reads_the_shards(tmp_path, png, parquet, vocab_path):
    import io

    import webdataset as wds

    materialise_task(MaterialiseConfig(vocab_path=str(vocab_path), **caption_task(tmp_path, png, parquet)))
    urls = [str(p) for p in sorted((tmp_path / "out").glob("train-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"train-{r:09d}" for r in (0, 1, 2, 4, 6, 7, 8, 9)]
    img = np.load(io.BytesIO(samples[0]["img.image.npy"]))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert json.loads(samples[0]["json"])["row"] == 0


def _digests(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def test_byte_identical_and_rerun_cleans_stale_files(tmp_path, png, parquet, vocab_path):
    cfg = MaterialiseConfig(vocab_path=str(vocab_path), **caption_task(tmp_path, png, parquet))
    materialise_task(cfg)
    first = _digests(tmp_path / "out")
    other = MaterialiseConfig(vocab_path=str(vocab_path), **caption_task(tmp_path, png, parquet, out_dir=str(tmp_path / "out2")))
    materialise_task(other)
    assert _digests(tmp_path / "out2") == first
    # a killed run leaves temp files and shards from a larger earlier run; a rerun clears them
    out = tmp_path / "out"
    (out / ".train-000003.tar.tmp").write_bytes(b"half a shard")
    (out / "train-000007.tar").write_bytes(b"old")
    (out / "notes.txt").write_text("not ours")
    materialise_task(cfg)
    after = _digests(out)
    assert after.pop("notes.txt")
    assert after == first


def test_grounding_boxes_and_refs(tmp_path, png, parquet, vocab_path, vocab):
    splits = {
        "train": parquet(
            tmp_path / "raw/train.parquet",
            {
                "img": [png(100, 50, 1), png(100, 50, 2), png(100, 50, 3), png(80, 40, 4)],
                "query": ["one", "two", "three", "four"],
                "region": ["0,0,100,50", "10,10,120,20", "1,2,3", "8 4 40 20"],
            },
        )
    }
    cfg = MaterialiseConfig(
        task="grounding", instruction=GROUNDING, raw_splits=splits, vocab_path=str(vocab_path),
        out_dir=str(tmp_path / "out"), image_size=8, shard_samples=10, reject_budget=RejectBudget(None, 2), progress=False,
    )
    materialise_task(cfg)
    rejects = read_rejects(tmp_path / "out/rejects.jsonl")
    assert [(r.row, r.column, r.reason) for r in rejects] == [
        (1, "region", "box out of range"),
        (2, "region", "malformed box (expected 4 numbers, got 3)"),
    ]
    with tarfile.open(tmp_path / "out/train-000000.tar") as tar:
        box = np.load(io.BytesIO(tar.extractfile("train-000000003.region.box.npy").read()))
        meta = json.loads(tar.extractfile("train-000000003.json").read())
    assert [vocab.bin_index(t) for t in box] == [round(8 / 80 * 15), round(4 / 40 * 15), round(40 / 80 * 15), round(20 / 40 * 15)]
    assert meta["refs"] == {"region": [8.0, 4.0, 40.0, 20.0]}  # query is an input: no ref
    assert meta["meta"] == {"img": {"width": 80, "height": 40}}
    m = json.loads((tmp_path / "out/manifest.json").read_text())
    assert m["slots"][2] == {
        "column": "region", "modality": "BOX", "member": "region.box.npy", "dtype": "int32", "shape": [4],
        "side": "output", "attrs": {},
    }


def test_reject_budget_exceeded_reports_counts(tmp_path, png, parquet, vocab_path):
    cfg = MaterialiseConfig(vocab_path=str(vocab_path), **caption_task(tmp_path, png, parquet, reject_budget=0.1))
    with pytest.raises(RejectBudgetExceeded) as e:
        materialise_task(cfg)
    assert e.value.counts == {"train": (2, 10), "valid": (0, 1)}
    msg = str(e.value)
    assert "train: 2/10 rows rejected (20.00%)" in msg and "10.00%" in msg and "rejects.jsonl" in msg
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()  # shards without a manifest do not exist
    assert len(read_rejects(out / "rejects.jsonl")) == 2


def test_columns_checked_before_any_work(tmp_path, png, parquet, vocab_path):
    kw = caption_task(tmp_path, png, parquet)
    kw["instruction"] = CAPTION.replace("[TEXT:cap]", "[TEXT:caption]")
    with pytest.raises(InstructionError) as e:
        materialise_task(MaterialiseConfig(vocab_path=str(vocab_path), **kw))
    assert "caption" in str(e.value) and "img, cap, extra" in str(e.value) and "^" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "instruction,needle",
    [
        ("[IMAGE:img,preprocess=imagepretrain] -> [TEXT:cap]", "preprocess=imagepretrain is not supported yet"),
        ("[TEXT:cap] -> [IMAGE:img,adaptor=image_vit]", "adaptor=image_vit is not supported yet"),
        ("[TEXT:cap] -> [AUDIO:img]", "generating AUDIO is not supported yet"),
        ("( [TEXT:q] )* -> [TEXT:cap]", "repeat groups '( ... )*' on the input side"),
        ("[IMAGE:img] -> ( [IMAGE:pic] )*", "an embedded IMAGE slot in a repeat group"),
        ("[IMAGE:img] -> [TEXT]", "names no column"),
        ("[TEXT:cap,uncased] -> [TEXT:cap]", "different"),
    ],
)
def test_unsupported_slots_fail_up_front(tmp_path, png, parquet, vocab_path, instruction, needle):
    kw = caption_task(tmp_path, png, parquet)
    kw["instruction"] = instruction
    with pytest.raises(InstructionError) as e:
        materialise_task(MaterialiseConfig(vocab_path=str(vocab_path), **kw))
    assert needle in str(e.value) and "^" in str(e.value)
    assert not (tmp_path / "out").exists()
    if "not supported yet" in needle or "repeat" in needle:
        assert isinstance(e.value, (UnsupportedSlotError, NotImplementedError))


def test_closed_set_labels_from_train_and_text_attrs(tmp_path, parquet, vocab_path, vocab):
    splits = {
        "train": parquet(tmp_path / "raw/train.parquet", {"q": ["How many?", "How MANY!", "what"], "a": ["Two", "three", "two"]}),
        "test": parquet(tmp_path / "raw/test.parquet", {"q": ["how many"], "a": ["nine"]}),
    }
    cfg = MaterialiseConfig(
        task="vqa", instruction="[TEXT:q,uncased,no_punctuation,max_length=2] -> [TEXT:a,closed_set,uncased]", raw_splits=splits,
        vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"), progress=False,
    )
    materialise_task(cfg)
    m = json.loads((tmp_path / "out/manifest.json").read_text())
    assert m["closed_sets"] == {"a": ["three", "two"]}
    assert m["slots"][0]["attrs"] == {"uncased": True, "no_punctuation": True, "max_length": 2}
    assert m["slots"][1]["attrs"] == {"uncased": True, "closed_set": True}
    with tarfile.open(tmp_path / "out/train-000000.tar") as tar:
        q = np.load(io.BytesIO(tar.extractfile("train-000000001.q.text.npy").read()))
        meta = json.loads(tar.extractfile("train-000000001.json").read())
    assert q.tolist() == vocab.encode_text("how many")[:2]
    assert meta["refs"] == {"a": "three"}
    assert meta["lengths"] == {"q.text.npy": len(q), "a.text.npy": len(vocab.encode_text("three"))}


def test_a_preprocess_that_shapes_the_array_reaches_the_modality(tmp_path, parquet):
    """`preprocess=text_phone` changes what PHONE stores (phones of the text, not the text split on
    spaces): materialisation must hand it to the modality, and the manifest records it."""
    from ofasys.modalities.phone import Phone
    from ofasys.text_tokenizer import train_text_tokenizer
    from ofasys.vocab import UnifiedVocab

    texts = ["three seven", "one two"]
    phones = sorted(Phone().vocab_tokens(texts, {"preprocess": "text_phone"}))
    vocab = UnifiedVocab.build(train_text_tokenizer(["what are the phones"] * 5, vocab_size=300), num_bins=4,
                               phones=phones)
    vocab.save(tmp_path / "vocab.json")
    splits = {"train": parquet(tmp_path / "raw/train.parquet", {"q": ["a", "b"], "text": texts})}
    materialise_task(MaterialiseConfig(
        task="phones", instruction="[TEXT:q] -> <BOS> [PHONE:text,preprocess=text_phone] <EOS>", raw_splits=splits,
        vocab_path=str(tmp_path / "vocab.json"), out_dir=str(tmp_path / "out"), progress=False))
    data = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    stored = data.get(0).arrays["text.phone"].tolist()
    assert stored == [vocab.phone_id(p) for p in "θ ɹ iː | s ɛ v ə n".split()]
    [slot] = [s for s in data.manifest["slots"] if s["modality"] == "PHONE"]
    assert slot["attrs"] == {"preprocess": "text_phone"}


def test_inputs_are_shown_as_a_person_reads_them():
    from ofasys.data.rows import MAX_DISPLAY, input_display

    assert input_display("what is the digit?") == "what is the digit?"
    assert input_display("photos/a.png") == "photos/a.png"  # a media path as written in the data
    assert input_display(b"\x89PNG....") == "<8 bytes>"
    long = input_display("x" * (MAX_DISPLAY + 10))
    assert len(long) == MAX_DISPLAY + 3 and long.endswith("...")
