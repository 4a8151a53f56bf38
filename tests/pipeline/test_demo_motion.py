"""The motion demo: windows of pybullet's DeepMimic clips, exact interpolation and looping, held-out
start points, augmentation the features do not see, damaged rows rejected; and the whole path from
demo rows to a model loss."""

from __future__ import annotations

import collections
import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial.transform import Rotation, Slerp

from ofasys.modalities import MODALITIES, RejectRow, RowContext
from ofasys.modalities.motion import features, read_frames
from pipeline.demo import generate, motion, table_meta, tasks
from tests.support.training import assert_adaptor_learns

MOTION = MODALITIES["MOTION"]
SLOT = {"sample_rate": 2, "min_length": 16}
INSTRUCTION = ("[MOTION:clip,sample_rate=2,min_length=16] <BOS> what is the person doing? <EOS> -> "
               "<BOS> [CATEGORY:label,closed_set] <EOS>")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


def _windows(split: str, size: int, seed: int) -> list[motion.Window]:
    """The windows `motion.label_table` draws for these arguments (same stream, same order)."""
    rng = tasks._rng(seed, "motion_label", split)
    return [motion.draw(rng, split) for _ in range(size)]


def _ctx() -> RowContext:
    return RowContext(vocab=None, image_size=32)  # MOTION reads no vocabulary


@pytest.fixture(scope="module")
def train_table() -> pa.Table:
    return generate("motion_label", "train", 40, seed=3, corrupt=4)


def test_same_arguments_same_bytes_other_seed_other_table(train_table):
    again = generate("motion_label", "train", 40, seed=3, corrupt=4)
    assert _parquet_bytes(again) == _parquet_bytes(train_table)
    assert {w.storage for w in _windows("train", 40, 3)} == {"json", "npy"}  # both writers are deterministic
    assert not generate("motion_label", "train", 40, seed=4, corrupt=4).equals(train_table)


def test_schema_metadata_and_growing_a_split_only_appends_rows(train_table):
    assert train_table.column_names == ["clip", "label"]
    assert pa.types.is_binary(train_table.schema.field("clip").type)
    assert pa.types.is_string(train_table.schema.field("label").type)
    meta = table_meta(train_table)
    assert (meta["generator"], meta["split"], meta["size"], meta["seed"]) == ("motion_label", "train", 40, 3)
    assert meta["fps"] == motion.FPS and meta["pybullet"] == "3.2.7" and len(meta["motions_sha256"]) == 64
    assert len(meta["corrupt_rows"]) == 4
    assert sorted(meta["corrupt_truncated_rows"] + meta["corrupt_short_rows"]) == meta["corrupt_rows"]
    small = generate("motion_label", "valid", 4, seed=1)
    assert generate("motion_label", "valid", 7, seed=1).slice(0, 4).equals(small)
    assert not generate("motion_label", "test", 4, seed=1).equals(small)


def test_labels_name_the_clip_and_are_about_equally_likely():
    windows = _windows("train", 600, 0)
    counts = collections.Counter(w.label for w in windows)
    assert set(counts) == set(motion.LABELS) and len(counts) == 12
    assert max(counts.values()) < 2 * min(counts.values())
    assert all(w.clip in motion.LABELS[w.label] for w in windows)
    assert {w.clip for w in windows if w.label in ("dance", "get up")} == {
        "dance_a", "dance_b", "getup_facedown", "getup_faceup"}
    assert "spinkick" not in {w.clip for w in windows}
    table = generate("motion_label", "train", 30, seed=0)
    assert table.column("label").to_pylist() == [w.label for w in windows[:30]]


def test_every_label_clip_ships_with_pybullet_and_loops_as_declared():
    for name in (c for clips in motion.LABELS.values() for c in clips):
        clip = motion.load_clip(name)
        assert clip.loop == (name not in ("kick", "punch", "getup_facedown", "getup_faceup")), name
        assert clip.frames.shape[0] >= 25 and 0.75 <= clip.length <= 4.5


def test_start_points_are_held_out_between_splits():
    """Each window starts in its split's part of its clip's timeline, so no valid or test window
    starts where a train window may."""
    for split, (lo, hi) in motion.SPLIT_FRACTIONS.items():
        for w in _windows(split, 300, 5):
            clip = motion.load_clip(w.clip)
            share = w.start / motion.start_range(clip, w.frames, w.speed)
            assert lo - 1e-6 <= share <= hi + 1e-6, (split, w)
    train = {(w.clip, round(w.start, 3)) for w in _windows("train", 300, 5) if motion.load_clip(w.clip).loop}
    held = {(w.clip, round(w.start, 3)) for s in ("valid", "test") for w in _windows(s, 300, 5)
            if motion.load_clip(w.clip).loop}
    assert train and held and not train & held


def test_windows_have_their_length_speed_and_frame_rate():
    for w in _windows("test", 200, 2):
        frames = motion.render(w)
        clip = motion.load_clip(w.clip)
        assert frames.shape == (w.frames, 44) and motion.SPEEDS[0] <= w.speed <= motion.SPEEDS[1]
        assert (frames[:-1, 0] == 1 / motion.FPS).all() and frames[-1, 0] == 0.0
        if clip.loop:
            assert motion.WINDOW[0] <= w.frames <= motion.WINDOW[1]
        else:  # never beyond the clip's end
            end = w.start + (w.frames - 1) * w.speed / motion.FPS
            assert w.frames <= motion.WINDOW[1] and end <= clip.length + 1e-6


def test_resampling_hits_the_key_frames_and_slerps_between_them():
    clip = motion.load_clip("backflip")  # 16 fps key frames
    at_keys = motion.pose_at(clip, clip.times[:-1])
    np.testing.assert_allclose(at_keys[:, 1:], clip.frames[:-1, 1:], atol=1e-12)
    mid = (clip.times[:-1] + clip.times[1:]) / 2
    between = motion.pose_at(clip, mid)
    q = clip.frames[:, 4:8][:, [1, 2, 3, 0]]  # root rotation, scipy's x, y, z, w
    want = np.stack([Slerp([0, 1], Rotation.from_quat(q[i : i + 2]))([0.5]).as_quat()[0] for i in range(len(mid))])
    got = between[:, 4:8][:, [1, 2, 3, 0]]
    np.testing.assert_allclose(np.abs(np.sum(got * want, 1)), 1.0, atol=1e-9)  # the same rotation (q ~ -q)
    np.testing.assert_allclose(between[:, 1:4], (clip.frames[:-1, 1:4] + clip.frames[1:, 1:4]) / 2, atol=1e-12)
    np.testing.assert_allclose(between[:, 20], (clip.frames[:-1, 20] + clip.frames[1:, 20]) / 2, atol=1e-12)


def test_looping_clips_continue_into_the_next_cycle_and_the_others_stop():
    walk = motion.load_clip("walk")
    t = np.linspace(0.0, walk.length, 37, endpoint=False)
    one, two = motion.pose_at(walk, t), motion.pose_at(walk, t + walk.length)
    np.testing.assert_allclose(two[:, 4:], one[:, 4:], atol=1e-12)  # the same poses
    np.testing.assert_allclose(two[:, 1:4] - one[:, 1:4], np.tile(walk.cycle_offset, (37, 1)), atol=1e-12)
    assert walk.cycle_offset[0] > 1.0 and walk.cycle_offset[1] == 0.0  # the walk goes 1.2 m along x per cycle
    kick = motion.load_clip("kick")
    np.testing.assert_allclose(motion.pose_at(kick, [kick.length + 1.0])[0, 1:], kick.frames[-1, 1:], atol=1e-12)


def test_heading_and_place_change_the_bytes_but_not_the_features():
    w = _windows("valid", 1, 9)[0]
    plain = motion.render(motion.Window(w.label, w.clip, w.start, w.speed, w.frames, 0.0, (0.0, 0.0), "json"))
    moved = motion.render(w)
    assert w.yaw != 0.0 and not np.allclose(plain[:, 1:8], moved[:, 1:8])
    np.testing.assert_allclose(features(moved), features(plain), atol=1e-9)
    # the root's path is moved to the window's place
    np.testing.assert_allclose(moved[0, [1, 3]], w.place, atol=1e-12)


def test_json_and_npy_rows_hold_the_same_motion():
    w = _windows("train", 1, 4)[0]
    frames = motion.render(w)
    as_json, as_npy = motion.encode(frames, "json"), motion.encode(frames, "npy")
    doc = json.loads(as_json)
    assert doc["Loop"] == "none" and len(doc["Frames"]) == w.frames and len(doc["Frames"][0]) == 44
    a = MOTION.materialise(as_json, SLOT, _ctx()).array.astype(np.float32)
    b = MOTION.materialise(as_npy, SLOT, _ctx()).array.astype(np.float32)
    assert a.shape == b.shape == ((w.frames + 1) // 2, 82)
    np.testing.assert_allclose(a, b, atol=0.02)
    np.testing.assert_allclose(read_frames(as_json)[0], frames, atol=1e-5 / 2 + 1e-12)
    with pytest.raises(ValueError, match="storage"):
        motion.encode(frames, "bvh")


def test_damaged_rows_are_rejected_and_the_others_materialise(train_table):
    meta = table_meta(train_table)
    truncated, short = set(meta["corrupt_truncated_rows"]), set(meta["corrupt_short_rows"])
    assert len(truncated) == len(short) == 2
    for row, data in enumerate(train_table.column("clip").to_pylist()):
        if row in truncated:
            with pytest.raises(RejectRow) as e:
                MOTION.materialise(data, SLOT, _ctx())
            assert e.value.reason.startswith("motion JSON could not be parsed (")
        elif row in short:
            assert MOTION.materialise(data, {}, _ctx()).array.shape[0] == motion.SHORT_FRAMES  # valid, only short
            with pytest.raises(RejectRow) as e:
                MOTION.materialise(data, SLOT, _ctx())
            assert e.value.reason == "motion has 4 frames after sample_rate=2, fewer than min_length=16"
        else:
            out = MOTION.materialise(data, SLOT, _ctx())
            assert 30 <= out.array.shape[0] <= 45 and out.meta["frames"] >= 60


def test_the_label_is_in_the_features():
    """A nearest-centroid classifier on each window's mean and spread of features, fitted on train
    windows, names most test windows' action (the majority baseline is about 1/12)."""
    def data(split, size):
        table = generate("motion_label", split, size, seed=0)
        x = [MOTION.materialise(c, SLOT, _ctx()).array.astype(np.float64) for c in table.column("clip").to_pylist()]
        return np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in x]), np.array(table.column("label").to_pylist())

    x_train, y_train = data("train", 240)
    x_test, y_test = data("test", 96)
    labels = sorted(set(y_train))
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    centroids = np.stack([((x_train[y_train == lab] - mu) / sd).mean(0) for lab in labels])
    distances = ((((x_test - mu) / sd)[:, None] - centroids[None]) ** 2).sum(-1)
    pred = np.array(labels)[distances.argmin(1)]
    assert (pred == y_test).mean() > 0.8
    assert collections.Counter(y_test).most_common(1)[0][1] / len(y_test) < 0.2


def test_missing_pybullet_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet_data", None)  # import raises ImportError
    with pytest.raises(FileNotFoundError, match=r"pip install pybullet==3\.2\.7"):
        motion.motions_dir()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="corrupt"):
        generate("motion_label", "train", 2, seed=0, corrupt=3)
    with pytest.raises(ValueError, match="split"):
        generate("motion_label", "dev", 2, seed=0)
    with pytest.raises(ValueError, match="unknown damage"):
        motion.damaged(_windows("train", 1, 0)[0], "nan")


def test_demo_rows_materialise_load_collate_and_train_the_model(tmp_path):
    """The whole path without DVC: 20 demo rows -> shards (positions checked against the model) ->
    ShardTaskData -> a collated batch -> UniversalModel.loss, whose gradient reaches the MOTION
    adaptor and which a few optimiser steps lower."""
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

    table = generate("motion_label", "train", 20, seed=5, corrupt=2)
    raw = tmp_path / "raw" / "train.parquet"
    raw.parent.mkdir()
    pq.write_table(table, raw)
    corpus = list(motion.LABELS) * 5 + ["what is the person doing?"] * 5
    vocab = UnifiedVocab.build(train_text_tokenizer(corpus, vocab_size=300), num_bins=4)
    vocab.save(tmp_path / "vocab.json")
    config = ModelConfig(vocab_size=vocab.size, max_positions=128, adaptors={"MOTION": {"subsample": 2, "hidden": 64}})
    materialise_task(MaterialiseConfig(
        task="motion_label", instruction=INSTRUCTION, raw_splits={"train": str(raw)},
        vocab_path=str(tmp_path / "vocab.json"), out_dir=str(tmp_path / "out"), image_size=32, shard_samples=8,
        reject_budget=0.2, progress=False, model=config))

    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["splits"]["train"]["num_samples"] == 18
    assert manifest["limits"]["adaptors"]["MOTION"] == {"subsample": 2, "hidden": 64}
    [clip_slot] = [s for s in manifest["slots"] if s["modality"] == "MOTION"]
    assert (clip_slot["member"], clip_slot["dtype"], clip_slot["shape"]) == ("clip.motion.npy", "float16", [None, 82])
    rejects = read_rejects(tmp_path / "out/rejects.jsonl")
    assert [(r.row, r.column) for r in rejects] == [(r, "clip") for r in table_meta(table)["corrupt_rows"]]

    data = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    samples = [data.get(i) for i in range(len(data))]
    assert all(s.meta["meta"]["clip"]["frames"] >= 60 for s in samples)
    batch = data.collate(samples, np.random.default_rng(0), train=True)
    [seg] = [s for s in batch.segments if s.kind == "MOTION"]
    frames = [s.arrays["clip.motion"].shape[0] for s in samples]
    assert seg.tensor.shape[0] == 18 and seg.tensor.shape[2] == 82 and seg.mask is not None
    assert seg.mask.sum(1).tolist() == frames and 30 <= min(frames) and max(frames) <= 45

    torch.manual_seed(0)
    model = UniversalModel(config, seed=0)
    memory, mask = model.encode(batch)
    counter = PositionCounter(parse_instruction(INSTRUCTION), vocab, config)
    counts = [counter.counts(s.arrays)[0].encoder for s in samples]
    assert counts == mask.sum(1).tolist()
    text = len(vocab.encode_text("what is the person doing?")) + 2
    assert [c - text for c in counts] == [-(-int(m) // 2) for m in seg.mask.sum(1).tolist()]  # ceil(T / subsample)
    assert [-(-f // 2) for f in frames] == [c - text for c in counts]

    assert_adaptor_learns(model, batch, "MOTION")
