"""The video demo: deterministic clips of a real digit moving over a real photo, honest captions,
every container decodable, damaged rows rejected; and the whole path from demo rows to a model loss."""

from __future__ import annotations

import collections
import io
import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ofasys.modalities import MODALITIES, RejectRow, RowContext
from pipeline.demo import generate, images, table_meta, tasks, video
from tests.support.training import assert_adaptor_learns

VIDEO = MODALITIES["VIDEO"]
INSTRUCTION = "[VIDEO:clip] <BOS> what does the video show? <EOS> -> <BOS> [TEXT:cap] <EOS>"


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


def _clips(split: str, size: int, seed: int) -> list[video.Clip]:
    """The clips `video.caption` renders for these arguments (same stream, same order)."""
    rng = tasks._rng(seed, "video_caption", split)
    return [video.render(rng, split) for _ in range(size)]


def _decode(data: bytes) -> tuple[list[np.ndarray], av.video.stream.VideoStream, str]:
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return frames, stream.average_rate, c.format.name


@pytest.fixture(scope="module")
def train_table() -> pa.Table:
    return generate("video_caption", "train", 24, seed=3, corrupt=4)


def test_same_arguments_same_bytes_other_seed_other_table(train_table):
    again = generate("video_caption", "train", 24, seed=3, corrupt=4)
    assert _parquet_bytes(again) == _parquet_bytes(train_table)
    # webm is in there: its muxer alone would draw random segment and track ids
    assert {"mp4", "webm", "gif"} <= {c.container for c in _clips("train", 24, 3)}
    assert not generate("video_caption", "train", 24, seed=4, corrupt=4).equals(train_table)


def test_schema_metadata_and_growing_a_split_only_appends_rows(train_table):
    assert train_table.column_names == ["clip", "cap"]
    assert pa.types.is_binary(train_table.schema.field("clip").type)
    assert pa.types.is_string(train_table.schema.field("cap").type)
    meta = table_meta(train_table)
    assert (meta["generator"], meta["split"], meta["size"], meta["seed"]) == ("video_caption", "train", 24, 3)
    assert len(meta["corrupt_rows"]) == 4
    assert sorted(meta["corrupt_truncated_rows"] + meta["corrupt_no_frames_rows"]) == meta["corrupt_rows"]
    assert len(meta["corrupt_truncated_rows"]) == len(meta["corrupt_no_frames_rows"]) == 2
    small = generate("video_caption", "valid", 4, seed=1)
    assert generate("video_caption", "valid", 7, seed=1).slice(0, 4).equals(small)
    assert not generate("video_caption", "test", 4, seed=1).equals(small)


def test_the_digit_moves_steadily_in_the_captioned_direction_over_a_still_photo():
    sign = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for clip in _clips("train", 150, 0):
        words = clip.caption.split()
        assert words[1] == images.WORDS[clip.label] and clip.caption.endswith(video.PHRASES[clip.direction])
        assert words[0] == ("an" if words[1] == "eight" else "a")
        assert video.FRAMES[0] <= len(clip.frames) <= video.FRAMES[1]
        xs = np.array([b[0] for b in clip.boxes])
        ys = np.array([b[1] for b in clip.boxes])
        dx, dy = sign[clip.direction]
        moving, still = (xs, ys) if dx else (ys, xs)
        step = np.diff(moving) * (dx or dy)
        assert (step >= 0).all() and step.max() - step.min() <= 1  # steady speed, whole pixels
        assert abs(int(moving[-1]) - int(moving[0])) >= video.MIN_TRAVEL
        assert (still == still[0]).all()
        for frame, (x0, y0, x1, y1) in zip(clip.frames, clip.boxes):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            changed = np.any(frame != clip.background, axis=2)
            ys_, xs_ = np.nonzero(changed)
            assert changed.any() and xs_.min() >= x0 and xs_.max() < x1 and ys_.min() >= y0 and ys_.max() < y1


def test_draws_mix_digits_directions_lengths_rates_and_containers_from_held_out_pools():
    pools = images.digit_pools()
    for split in ("valid", "test"):
        for clip in _clips(split, 40, 2):
            assert clip.index in pools[split][clip.label]
    clips = _clips("train", 600, 0)
    assert {c.label for c in clips} == set(range(10)) and {c.direction for c in clips} == set(video.DIRECTIONS)
    assert {len(c.frames) for c in clips} == set(range(video.FRAMES[0], video.FRAMES[1] + 1))
    assert {c.rate for c in clips} == set(video.RATES)
    containers = collections.Counter(c.container for c in clips)
    assert containers["mp4"] > 350 and containers["webm"] > 60 and containers["gif"] > 60
    assert all(c.index in pools["train"][c.label] for c in clips)


@pytest.mark.parametrize("container", ["mp4", "webm", "gif"])
def test_every_container_decodes_to_the_rendered_frames(container):
    clip = _clips("valid", 1, 9)[0]
    data = video.encode(clip.frames, container, clip.rate)
    assert data == video.encode(clip.frames, container, clip.rate)
    frames, rate, fmt = _decode(data)
    assert fmt.split(",")[0] == {"mp4": "mov", "webm": "matroska", "gif": "gif"}[container]
    assert len(frames) == len(clip.frames) and rate == clip.rate
    for got, want in zip(frames, clip.frames):
        assert got.shape == (64, 64, 3)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0  # lossy, but the same picture


def test_damaged_rows_are_rejected_and_the_others_materialise(train_table):
    meta = table_meta(train_table)
    reasons = {**{r: "video could not be decoded (InvalidDataError)" for r in meta["corrupt_truncated_rows"]},
               **{r: "video has no frames" for r in meta["corrupt_no_frames_rows"]}}
    ctx = RowContext(vocab=None, image_size=32)
    for row, data in enumerate(train_table.column("clip").to_pylist()):
        if row in reasons:
            with pytest.raises(RejectRow) as e:
                VIDEO.materialise(data, {}, ctx)
            assert e.value.reason == reasons[row]
        else:
            out = VIDEO.materialise(data, {}, ctx)
            assert out.meta["frames"] >= video.FRAMES[0] and out.meta["width"] == out.meta["height"] == 64


def test_demo_rows_materialise_load_collate_and_train_the_model(tmp_path):
    """The whole path without DVC: 20 demo rows -> shards (positions checked against the model) ->
    ShardTaskData -> a collated batch -> UniversalModel.loss, whose gradient reaches the VIDEO adaptor
    and which a few optimiser steps lower."""
    import torch

    from ofasys.data.limits import PositionCounter
    from ofasys.data.materialise import MaterialiseConfig, materialise_task
    from ofasys.data.rejects import read_rejects
    from ofasys.data.task_data import ShardTaskData
    from ofasys.instruction import parse_instruction
    from ofasys.model import ModelConfig
    from ofasys.model.universal import UniversalModel
    from ofasys.text_tokenizer import train_text_tokenizer
    from ofasys.vocab import UnifiedVocab

    table = generate("video_caption", "train", 20, seed=5, corrupt=2)
    raw = tmp_path / "raw" / "train.parquet"
    raw.parent.mkdir()
    pq.write_table(table, raw)
    corpus = table.column("cap").to_pylist() * 5 + ["what does the video show?"] * 5
    vocab = UnifiedVocab.build(train_text_tokenizer(corpus, vocab_size=300), num_bins=4)
    vocab.save(tmp_path / "vocab.json")
    config = ModelConfig(vocab_size=vocab.size, max_positions=128, adaptors={"VIDEO": {"max_frames": 4}})
    materialise_task(MaterialiseConfig(
        task="video_caption", instruction=INSTRUCTION, raw_splits={"train": str(raw)},
        vocab_path=str(tmp_path / "vocab.json"), out_dir=str(tmp_path / "out"), image_size=32, shard_samples=8,
        reject_budget=0.2, progress=False, model=config))

    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["splits"]["train"]["num_samples"] == 18
    assert manifest["limits"]["adaptors"]["VIDEO"]["max_frames"] == 4
    [clip_slot] = [s for s in manifest["slots"] if s["modality"] == "VIDEO"]
    assert (clip_slot["member"], clip_slot["dtype"], clip_slot["shape"]) == ("clip.video.npy", "uint8", [None, 32, 32, 3])
    rejects = read_rejects(tmp_path / "out/rejects.jsonl")
    assert [(r.row, r.column) for r in rejects] == [(r, "clip") for r in table_meta(table)["corrupt_rows"]]

    data = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    samples = [data.get(i) for i in range(len(data))]
    assert all(s.meta["meta"]["clip"]["frames"] >= video.FRAMES[0] for s in samples)
    batch = data.collate(samples, np.random.default_rng(0), train=True)
    [seg] = [s for s in batch.segments if s.kind == "VIDEO"]
    assert tuple(seg.tensor.shape) == (18, 4, 3, 32, 32) and seg.mask is None

    torch.manual_seed(0)
    model = UniversalModel(config, seed=0)
    memory, mask = model.encode(batch)
    counter = PositionCounter(parse_instruction(INSTRUCTION), vocab, config)
    assert [counter.counts(s.arrays)[0].encoder for s in samples] == mask.sum(1).tolist()
    assert memory.shape[1] == 4 * 16 + len(vocab.encode_text("what does the video show?")) + 2

    assert_adaptor_learns(model, batch, "VIDEO")
