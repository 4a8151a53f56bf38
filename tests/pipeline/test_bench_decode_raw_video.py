"""bench/decode_raw.py makes a video task when the demo's shards have none: the split it makes must be
what the materialiser stores for those raw rows, so that its shards-vs-raw ratio compares the same
batches, and the same seed must make the same split, so every run measures the same clips."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ofasys.data.task_data import ShardTaskData
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "decode_raw.py"
CLIPS = 6


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_decode_raw", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.BATCH = 4  # a handful of clips per batch keeps the test fast; the check is the bench's own
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The bench's video task (CLIPS clips), made twice in separate directories."""
    root = tmp_path_factory.mktemp("decode_raw_video")
    vocab_path = root / "vocab.json"
    # Captions hold words this corpus lacks ("moves", "video"): the byte-level tokenizer still encodes them.
    UnifiedVocab.build(train_text_tokenizer(["a handwritten seven to the left"] * 5, vocab_size=300),
                       num_bins=8).save(vocab_path)
    bench = load_bench()
    manifests = [bench.make_video_task(root / name, vocab_path, ROOT / "params-full.yaml", CLIPS)
                 for name in ("a", "b")]
    return bench, UnifiedVocab.load(vocab_path), manifests


def test_made_split_first_batch_equals_raw_decoded(made):
    bench, vocab, (manifest, _) = made
    data = ShardTaskData(manifest, "train", vocab)
    assert data.name == bench.VIDEO_TASK and len(data) == CLIPS  # no clip rejected
    rows = bench.raw_rows(manifest.parents[2] / "raw", data)
    from_shards, from_raw = bench.batch_makers(data, rows, vocab)
    stored = from_shards(0)
    video = [s.tensor for s in stored.segments if s.tensor.ndim == 5]
    assert len(video) == 1 and video[0].shape[0] == bench.BATCH and video[0].shape[-2:] == (48, 48)
    assert video[0].dtype == torch.uint8 and float(video[0].float().std()) > 2.5  # real frames, not blank ones
    assert bench.same_tensors(stored, from_raw(0))
    # The check tells batches of other clips apart (same shapes, other frames and captions).
    assert not bench.same_tensors(stored, from_raw(1))


def test_made_split_is_the_same_bytes_every_time(made):
    _, _, (first, second) = made
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == sorted(p.name for p in second.parent.iterdir())
    for name in names:
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    raw = [m.parents[2] / "raw" / "video_caption" / "train.parquet" for m in (first, second)]
    assert raw[0].read_bytes() == raw[1].read_bytes()


def test_the_jpeg_frames_split_holds_the_same_clips_jpeg_compressed(made, tmp_path):
    """The opt-in layout through the pipeline's ingest and materialisation: the instruction gains the
    flag, the manifest records it, shards and raw decoding agree, and the frames are the default
    layout's up to JPEG's loss (same clips, same order, same lengths)."""
    bench, vocab, (manifest, _) = made
    jpeg = bench.make_video_task(tmp_path, manifest.parents[3] / "vocab.json", ROOT / "params-full.yaml", CLIPS,
                                 jpeg=True)
    data, pixels = ShardTaskData(jpeg, "train", vocab), ShardTaskData(manifest, "train", vocab)
    assert "[VIDEO:clip,jpeg_frames]" in data.manifest["instruction"]
    [slot] = [s for s in data.manifest["slots"] if s["modality"] == "VIDEO"]
    assert slot["attrs"] == {"jpeg_frames": True} and slot["shape"] == [None]
    assert (jpeg.parent / "train-lengths.npy").read_bytes() == (manifest.parent / "train-lengths.npy").read_bytes()
    from_shards, from_raw = bench.batch_makers(data, bench.raw_rows(tmp_path / "raw", data), vocab)
    stored = from_shards(0)
    assert bench.same_tensors(stored, from_raw(0))
    [lossy] = [s.tensor for s in stored.segments if s.kind == "VIDEO"]
    [exact] = [s.tensor for s in bench.batch_makers(pixels, [], vocab)[0](0).segments if s.kind == "VIDEO"]
    assert lossy.shape == exact.shape and 0 < float((lossy.float() - exact.float()).abs().mean()) < 3


def test_field_size_split_holds_big_clips_and_its_first_batch_equals_raw_decoded(made, tmp_path):
    """decode_raw's second measure: the same rows with field-size media, materialised apart."""
    import io
    import json

    import av
    import pyarrow.parquet as pq

    from bench.field_media import FIELD_VIDEO, HOLD, make_field_task

    bench, vocab, (manifest, _) = made
    raw_train = manifest.parents[2] / "raw" / bench.VIDEO_TASK / "train.parquet"
    field_manifest, field_raw = make_field_task(manifest, raw_train, CLIPS, manifest.parents[3] / "vocab.json", None,
                                                tmp_path)
    (column,) = [s["column"] for s in json.loads(manifest.read_text())["slots"] if s["modality"] == "VIDEO"]
    for small, big in zip(pq.read_table(raw_train).column(column).to_pylist(),
                          pq.read_table(field_raw / bench.VIDEO_TASK / "train.parquet").column(column).to_pylist()):
        frames = []
        for clip in (small, big):
            with av.open(io.BytesIO(clip)) as container:
                frames.append([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert len(frames[1]) == HOLD * len(frames[0]) and frames[1][0].shape == (FIELD_VIDEO[1], FIELD_VIDEO[0], 3)
    data = ShardTaskData(field_manifest, "train", vocab)
    assert len(data) == CLIPS
    from_shards, from_raw = bench.batch_makers(data, bench.raw_rows(field_raw, data), vocab)
    assert bench.same_tensors(from_shards(0), from_raw(0))


def test_field_size_images_are_jpeg_photos():
    import io

    from PIL import Image

    from bench.field_media import FIELD_IMAGE, field_image
    from tests.support.images import random_png

    photo = Image.open(io.BytesIO(field_image(random_png(0))))
    assert photo.format == "JPEG" and photo.size == FIELD_IMAGE and photo.mode == "RGB"
