"""Frame outputs in the data layer: a MOTION output slot, or AUDIO with `preprocess=audio_tgt_fbank`, is one
`<mask>` placeholder per stored frame row in the decoder sequence, with `Batch.frames` saying which
decoder state predicts which frame; the plan walks the placeholders as a "frames" step; materialisation
stores speech as rows of 4 fbank frames and records the train split's frame statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ofasys.data.collate import Collator, Sample, generation_assets
from ofasys.data.limits import PositionCounter
from ofasys.data.materialise import FrameSums, MaterialiseConfig, materialise_task
from ofasys.data.members import plan_members
from ofasys.data.plan import OutputPlan
from ofasys.data.rows import sample_from_row
from ofasys.instruction import InstructionError, parse_instruction
from ofasys.modalities import FRAME_STATS, MODALITIES, RejectRow, RowContext
from ofasys.modalities.audio import AUDIO_TARGET, FRAMES_PER_STEP, NUM_MEL_BINS, TARGET_WIDTH, raw_fbank
from ofasys.modalities.motion import FEATURES
from ofasys.model import ModelConfig

T2M = '<BOS> how does a person " [TEXT:label] " move? <EOS> -> <BOS> [MOTION:clip] <EOS>'
T2M_PROMPT = "<BOS> [TEXT:label] <EOS> -> motion: [MOTION:clip] <EOS>"  # prompt text before the placeholders
T2M_NO_BOS = "<BOS> [TEXT:label] <EOS> -> [MOTION:clip] <EOS>"  # the collator puts <bos> first
TTS = '<BOS> what does " [TEXT:text] " sound like? <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>'


def motion_sample(vocab, key: str, frames: int, seed: int = 0, label: str = "one two") -> Sample:
    rng = np.random.default_rng(seed)
    return Sample(key, {"meta": {}}, {
        "label.text": np.asarray(vocab.encode_text(label), np.int32),
        "clip.motion": rng.standard_normal((frames, FEATURES)).astype(np.float16),
    })


def speech_sample(vocab, key: str, rows: int, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    return Sample(key, {"meta": {}}, {
        "text.text": np.asarray(vocab.encode_text("three four"), np.int32),
        "wav.audio_tgt": (rng.standard_normal((rows, TARGET_WIDTH)) * 3 - 5).astype(np.float16),
    })


def sine(seconds: float, rate: int = 16000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ----------------------------------------------------------------------------- collation


@pytest.mark.parametrize("instruction", [T2M, T2M_PROMPT, T2M_NO_BOS])
def test_each_frame_is_predicted_by_the_state_before_its_placeholder(vocab, instruction):
    col = Collator(parse_instruction(instruction), vocab, "t2m", seed=1)
    samples = [motion_sample(vocab, "train-0", 3, 0), motion_sample(vocab, "train-1", 5, 1)]
    b = col.collate(samples, np.random.default_rng(0), train=True)
    f = b.frames
    assert f is not None and f.modality == "MOTION"
    assert f.index.shape == f.mask.shape == (2, 5) and f.values.shape == (2, 5, FEATURES)
    assert f.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert b.decoder_input[:, 0].tolist() == [vocab.bos, vocab.bos]
    for i, n in enumerate((3, 5)):
        idx = f.index[i, :n]
        assert idx.tolist() == list(range(int(idx[0]), int(idx[0]) + n))  # consecutive states
        # the state at index[j] has frame j's placeholder as its next-token target ...
        assert b.target[i, idx].tolist() == [vocab.mask] * n
        # ... and that placeholder sits one position later in the decoder input
        assert b.decoder_input[i, idx + 1].tolist() == [vocab.mask] * n
        # the placeholders are the only <mask>s: the first target that is one is frame 0's
        first = int((b.target[i] == vocab.mask).nonzero()[0])
        assert int(idx[0]) == first
        assert f.index[i, n:].tolist() == [0] * (5 - n)  # padding index 0, masked out


def test_placeholders_and_the_final_eos_carry_loss_prompt_text_does_not(vocab):
    col = Collator(parse_instruction(T2M_PROMPT), vocab, "t2m")
    b = col.collate([motion_sample(vocab, "k", 4)], np.random.default_rng(0), train=True)
    prompt = vocab.encode_text("motion:")
    seq = [vocab.bos, *prompt, *[vocab.mask] * 4, vocab.eos]
    assert b.decoder_input.tolist() == [seq[:-1]] and b.target.tolist() == [seq[1:]]
    assert b.loss_mask.tolist() == [[False] * len(prompt) + [True] * 5]  # 4 x go on + stop
    assert b.target[0, b.loss_mask[0]].tolist() == [vocab.mask] * 4 + [vocab.eos]


def test_padding_rows_carry_no_loss_and_no_frame(vocab):
    col = Collator(parse_instruction(T2M), vocab, "t2m")
    b = col.collate([motion_sample(vocab, "a", 2), motion_sample(vocab, "b", 6)], np.random.default_rng(0), True)
    assert b.loss_mask.sum(1).tolist() == [3, 7]  # n placeholders + <eos>
    assert b.loss_mask[0, 3:].sum() == 0
    assert torch.all(b.frames.values[0, 2:] == 0)  # no target beyond the real frames
    assert b.frames.mask.sum(1).tolist() == [2, 6]
    # how far through its own output each frame is: j / n, whatever its batch mates' lengths
    assert b.frames.progress[0, :2].tolist() == [0.0, 0.5] and b.frames.progress[0, 2:].sum() == 0
    assert torch.allclose(b.frames.progress[1], torch.arange(6) / 6)


def test_values_are_normalised_by_the_given_statistics(vocab):
    mean = np.linspace(-1, 1, FEATURES).astype(np.float32)
    std = np.linspace(0.5, 2, FEATURES).astype(np.float32)
    stats = {FRAME_STATS: {"clip.motion": {"mean": mean.tolist(), "std": std.tolist(), "max_steps": 9}}}
    s = motion_sample(vocab, "k", 4, seed=3)
    plain = Collator(parse_instruction(T2M), vocab, "t2m").collate([s], np.random.default_rng(0), False)
    normed = Collator(parse_instruction(T2M), vocab, "t2m", assets=stats).collate([s], np.random.default_rng(0), False)
    raw = s.arrays["clip.motion"].astype(np.float32)
    np.testing.assert_array_equal(plain.frames.values[0].numpy(), raw)  # no statistics: as stored
    np.testing.assert_allclose(normed.frames.values[0].numpy(), (raw - mean) / std, rtol=1e-6, atol=1e-6)
    # statistics of another array are not applied
    other = {FRAME_STATS: {"other.motion": {"mean": mean.tolist(), "std": std.tolist(), "max_steps": 9}}}
    again = Collator(parse_instruction(T2M), vocab, "t2m", assets=other).collate([s], np.random.default_rng(0), False)
    np.testing.assert_array_equal(again.frames.values[0].numpy(), raw)


def test_generation_assets_carry_the_manifests_frame_stats():
    manifest = {"frame_stats": {"clip.motion": {"mean": [0.5], "std": [2.0], "max_steps": 4}}}
    assert generation_assets(manifest)[FRAME_STATS] == {"clip.motion": {"mean": [0.5], "std": [2.0], "max_steps": 4}}
    assert FRAME_STATS not in generation_assets({})


def test_diffusion_draws_only_for_motion(vocab):
    motion = Collator(parse_instruction(T2M), vocab, "t2m").collate(
        [motion_sample(vocab, "a", 3), motion_sample(vocab, "b", 5)], np.random.default_rng(0), True).frames
    assert motion.noise.shape == (2, 5, FEATURES) and motion.noise.dtype == torch.float32
    assert motion.level.shape == (2,) and bool(((motion.level >= 0) & (motion.level < 1)).all())
    assert float(motion.noise.std()) > 0.5  # standard normal draws, not zeros
    speech = Collator(parse_instruction(TTS), vocab, "tts").collate(
        [speech_sample(vocab, "a", 2), speech_sample(vocab, "b", 4)], np.random.default_rng(0), True).frames
    assert speech.modality == "AUDIO" and speech.values.shape == (2, 4, TARGET_WIDTH)
    assert speech.noise is None and speech.level is None


def test_training_draws_come_from_the_batch_generator(vocab):
    col = Collator(parse_instruction(T2M), vocab, "t2m", seed=4)
    samples = [motion_sample(vocab, "a", 3), motion_sample(vocab, "b", 3)]
    one = col.collate(samples, np.random.default_rng(10), True).frames
    same = col.collate(samples, np.random.default_rng(10), True).frames
    other = col.collate(samples, np.random.default_rng(11), True).frames
    assert torch.equal(one.noise, same.noise) and torch.equal(one.level, same.level)  # a resumed run draws the same
    assert not torch.equal(one.noise, other.noise)


def test_evaluation_noise_is_keyed_by_sample(vocab):
    col = Collator(parse_instruction(T2M), vocab, "t2m", seed=4)
    a = motion_sample(vocab, "valid-000000001", 3)
    alone = col.collate([a], np.random.default_rng(0), False).frames
    again = col.collate([a], np.random.default_rng(99), False).frames
    assert torch.equal(alone.noise, again.noise) and torch.equal(alone.level, again.level)
    mates = col.collate([motion_sample(vocab, "valid-000000002", 3, seed=1), a], np.random.default_rng(5), False).frames
    assert torch.equal(mates.noise[1, :3], alone.noise[0, :3])
    assert not torch.equal(mates.noise[0, :3], mates.noise[1, :3])  # each sample its own draw
    other_seed = Collator(parse_instruction(T2M), vocab, "t2m", seed=5).collate([a], np.random.default_rng(0), False)
    assert not torch.equal(other_seed.frames.noise, alone.noise)


def test_evaluation_noise_level_does_not_depend_on_batch_mates(vocab):
    col = Collator(parse_instruction(T2M), vocab, "t2m", seed=4)
    a = motion_sample(vocab, "valid-000000001", 3)
    alone = col.collate([a], np.random.default_rng(0), False).frames
    with_longer = col.collate([a, motion_sample(vocab, "valid-000000002", 7)], np.random.default_rng(0), False).frames
    assert float(with_longer.level[0]) == float(alone.level[0])


def test_a_frame_output_at_the_end_is_taught_to_stop_or_refused(vocab):
    ins = parse_instruction("<BOS> [TEXT:label] <EOS> -> [MOTION:clip]")
    try:
        plan_members(ins)
    except InstructionError as err:  # refusing it, naming where it stops, would do too
        assert "EOS" in str(err)
        return
    b = Collator(ins, vocab, "t2m").collate([motion_sample(vocab, "k", 3)], np.random.default_rng(0), True)
    assert b.target[0, -1].item() == vocab.eos and bool(b.loss_mask[0, -1])


def test_a_real_text_to_motion_row_collates(vocab):
    from pipeline.demo import generate

    ins = '<BOS> how does a person " [TEXT:label] " move? <EOS> -> <BOS> [MOTION:clip,sample_rate=2,min_length=16] <EOS>'
    rows = generate("motion_label", "train", 2, 1).to_pylist()
    samples = [sample_from_row(ins, r, vocab, key=f"train-{i}", sides=("input", "output")) for i, r in enumerate(rows)]
    clip = samples[0].arrays["clip.motion"]
    assert clip.ndim == 2 and clip.shape[1] == FEATURES and clip.shape[0] >= 16
    assert samples[0].meta["meta"]["clip"]["frame_seconds"] > 0
    b = Collator(parse_instruction(ins), vocab, "t2m").collate(samples, np.random.default_rng(0), True)
    for i, s in enumerate(samples):
        n = len(s.arrays["clip.motion"])
        assert int(b.frames.mask[i].sum()) == n
        assert int((b.target[i] == vocab.mask).sum()) == n
        np.testing.assert_array_equal(b.frames.values[i, :n].numpy(), s.arrays["clip.motion"].astype(np.float32))


# ----------------------------------------------------------------------------- members


def test_generating_audio_without_the_target_preprocess_names_the_fix():
    with pytest.raises(InstructionError) as err:
        plan_members(parse_instruction("<BOS> say [TEXT:text] <EOS> -> <BOS> [AUDIO:wav] <EOS>"))
    assert "preprocess=audio_tgt_fbank" in err.value.fix and "generating AUDIO" in err.value.message


def test_the_target_preprocess_on_the_input_side_is_refused():
    with pytest.raises(InstructionError) as err:
        plan_members(parse_instruction("[AUDIO:wav,preprocess=audio_tgt_fbank] <BOS> what? <EOS> -> <BOS> [TEXT:t] <EOS>"))
    assert "generates" in err.value.message and "remove preprocess=" in err.value.fix


def test_two_frame_outputs_in_one_template_are_refused():
    ins = "<BOS> [TEXT:t] <EOS> -> <BOS> [MOTION:clip] then [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>"
    with pytest.raises(InstructionError) as err:
        plan_members(parse_instruction(ins))
    assert "second frame output" in err.value.message and "one of them per task" in err.value.fix
    assert ins[err.value.column:].startswith("[AUDIO")  # the caret is at the second one


def test_frame_output_members_are_output_side_arrays():
    names = {m.name: m.sides for m in plan_members(parse_instruction(TTS))}
    assert names == {"text.text": frozenset({"input"}), "wav.audio_tgt": frozenset({"output"})}
    names = {m.name: m.sides for m in plan_members(parse_instruction(T2M))}
    assert names["clip.motion"] == frozenset({"output"})


# ----------------------------------------------------------------------------- limits


@pytest.mark.parametrize("instruction,make", [(T2M, motion_sample), (T2M_PROMPT, motion_sample), (T2M_NO_BOS, motion_sample), (TTS, speech_sample)])
def test_limits_count_one_decoder_position_per_frame_row(vocab, instruction, make):
    ins = parse_instruction(instruction)
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1)
    counter = PositionCounter(ins, vocab, config)
    for n in (1, 6):
        s = make(vocab, "k", n)
        counted = counter.count(ins.templates[0], s.arrays)
        b = Collator(ins, vocab, "t").collate([s], np.random.default_rng(0), train=False)
        assert counted.decoder == b.decoder_input.shape[1]
        assert counted.encoder == sum(seg.tensor.shape[1] for seg in b.segments)
        assert [n_ for side, _, n_ in counted.slots if side == "output"] == [n]


# ----------------------------------------------------------------------------- plan


def plan_for(instruction, vocab, **kw):
    return OutputPlan.build(parse_instruction(instruction).templates[0], vocab, **kw)


def test_frames_step_goes_on_with_mask_and_stops_with_eos(vocab):
    plan = plan_for("<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip,max_length=3] <EOS>", vocab)
    m, e = vocab.mask, vocab.eos
    assert plan.prefix == (vocab.bos,)
    assert list(plan.allowed([])) == [m]  # at least one frame
    assert set(plan.allowed([m])) == {m, e}
    assert set(plan.allowed([m, m])) == {m, e}
    assert list(plan.allowed([m, m, m])) == [e]  # at the cap: only stop
    assert not plan.done([m, m]) and plan.done([m, m, e])
    assert plan.max_new_tokens == 4
    with pytest.raises(ValueError):
        plan.allowed([m, 7])  # a text id is not a placeholder
    with pytest.raises(ValueError):
        plan.allowed([e])  # stopping before the first frame


def test_frames_cap_from_train_statistics_or_default(vocab):
    ins = "<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip] <EOS>"
    stats = {FRAME_STATS: {"clip.motion": {"mean": [0.0], "std": [1.0], "max_steps": 8}}}
    assert plan_for(ins, vocab, assets=stats).steps[0].max_length == 11  # 8 x 1.25 + 1
    assert plan_for(ins, vocab).steps[0].max_length == 256
    speech = "<BOS> [TEXT:t] <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank,max_length=10] <EOS>"
    assert plan_for(speech, vocab).steps[0].max_length == 3  # 10 frames = ceil(10 / 4) steps
    assert plan_for(speech, vocab).steps[0].kind == "frames"
    unbounded = speech.replace(",max_length=10", "")
    seen = {FRAME_STATS: {"wav.audio_tgt": {"mean": [0.0], "std": [1.0], "max_steps": 20}}}
    assert plan_for(unbounded, vocab, assets=seen).steps[0].max_length == 26  # its own array's statistics
    assert plan_for(unbounded, vocab, assets=stats).steps[0].max_length == 256  # not another array's
    _, handler, _ = plan_for(unbounded, vocab).frame_output([vocab.mask, vocab.eos])
    assert handler is AUDIO_TARGET


def test_frame_output_positions_are_those_of_the_placeholders(vocab):
    plan = plan_for("<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip] <EOS>", vocab)
    m, e = vocab.mask, vocab.eos
    step, handler, positions = plan.frame_output([m, m, m, e])
    assert step.kind == "frames" and step.column == "clip" and handler is MODALITIES["MOTION"]
    assert positions == [0, 1, 2]
    assert plan.frame_output([m, m])[2] == [0, 1]  # cut short: keeps what it made
    assert plan.frame_output([])[2] == []
    assert plan_for("<BOS> [TEXT:q] <EOS> -> <BOS> [TEXT:a] <EOS>", vocab).frame_output([5, e]) is None


def test_frame_output_positions_after_a_generated_text(vocab):
    plan = plan_for("<BOS> [TEXT:q] <EOS> -> <BOS> [TEXT:a] then [MOTION:clip] <EOS>", vocab)
    m, e = vocab.mask, vocab.eos
    text, then = vocab.encode_text("one two"), vocab.encode_text("then")
    generated = [*text, *then, m, m, e]
    _, _, positions = plan.frame_output(generated)
    assert positions == [len(text) + len(then), len(text) + len(then) + 1]
    assert all(generated[p] == m for p in positions)
    frames = np.ones((2, FEATURES), np.float32)
    out = plan.decode(generated, frames={"clip": frames})
    assert out["a"] == vocab.decode_text(text)
    np.testing.assert_array_equal(out["clip"], frames)


def test_decode_with_and_without_frames(vocab):
    m, e = vocab.mask, vocab.eos
    motion = plan_for(T2M, vocab)
    assert motion.decode([m, m, e]) == {"clip": None}
    made = np.arange(2 * FEATURES, dtype=np.float64).reshape(2, FEATURES)
    out = motion.decode([m, m, e], frames={"clip": made})["clip"]
    assert out.dtype == np.float32 and out.shape == (2, FEATURES)
    np.testing.assert_array_equal(out, made)
    speech = plan_for(TTS, vocab)
    rows = np.arange(2 * TARGET_WIDTH, dtype=np.float32).reshape(2, TARGET_WIDTH)
    fbank = speech.decode([m, m, e], frames={"wav": rows})["wav"]
    assert fbank.shape == (2 * FRAMES_PER_STEP, NUM_MEL_BINS)
    np.testing.assert_array_equal(fbank[1], rows[0, NUM_MEL_BINS : 2 * NUM_MEL_BINS])
    assert speech.decode([m, m, e], frames={"other": rows}) == {"wav": None}


# ----------------------------------------------------------------------------- AudioTarget


def test_audio_target_stores_rows_of_four_frames_padded_with_the_last(vocab):
    wave = sine(0.105)  # 1680 samples -> 1 + (1680 - 400) // 160 = 9 frames
    feats = raw_fbank(wave, 16000)
    assert feats.shape == (9, NUM_MEL_BINS)
    res = AUDIO_TARGET.materialise((wave, 16000), {}, RowContext(vocab=vocab, image_size=32))
    assert res.array.dtype == np.float16 and res.array.shape == (3, TARGET_WIDTH)  # ceil(9 / 4) = 3
    frames = res.array.astype(np.float32).reshape(12, NUM_MEL_BINS)
    np.testing.assert_array_equal(frames[:9], feats.astype(np.float16).astype(np.float32))
    for k in (9, 10, 11):  # padding repeats the final frame
        np.testing.assert_array_equal(frames[k], frames[8])
    assert res.meta["frames"] == 9 and res.meta["sample_rate"] == 16000 and res.meta["channels"] == 1
    assert res.meta["duration"] == pytest.approx(0.105)
    # not normalised per utterance: absolute log-mel levels (what a waveform is recovered from)
    assert abs(float(frames[:9].mean())) > 1.0
    assert AUDIO_TARGET.frame_steps(res.array) == 3
    back = AUDIO_TARGET.decode_frames(res.array)
    assert back.shape == (12, NUM_MEL_BINS) and back.dtype == np.float32
    np.testing.assert_array_equal(back, frames)


def test_audio_target_rows_exactly_full(vocab):
    wave = sine(0.0650)  # 1040 samples -> 1 + 640 // 160 = 5 frames ... -> 2 rows, 3 repeats
    res = AUDIO_TARGET.materialise((wave, 16000), {}, RowContext(vocab=vocab, image_size=32))
    assert res.meta["frames"] == 5 and res.array.shape == (2, TARGET_WIDTH)
    wave = sine(0.075)  # 1200 samples -> 1 + 800 // 160 = 6 frames -> 2 rows
    res = AUDIO_TARGET.materialise((wave, 16000), {"max_length": 4}, RowContext(vocab=vocab, image_size=32))
    assert res.meta["frames"] == 4 and res.array.shape == (1, TARGET_WIDTH)  # cut to 4 frames: one full row
    with pytest.raises(RejectRow, match="min_length=50"):
        AUDIO_TARGET.materialise((wave, 16000), {"min_length": 50}, RowContext(vocab=vocab, image_size=32))


def test_a_real_tts_row_materialises_and_collates(vocab):
    from pipeline.demo import generate

    row = generate("tts", "train", 1, 3).to_pylist()[0]
    s = sample_from_row(TTS, row, vocab, key="train-000000000", sides=("input", "output"))
    target = s.arrays["wav.audio_tgt"]
    meta = s.meta["meta"]["wav"]
    assert target.shape == (-(-meta["frames"] // FRAMES_PER_STEP), TARGET_WIDTH)
    b = Collator(parse_instruction(TTS), vocab, "tts").collate([s], np.random.default_rng(0), True)
    assert int(b.frames.mask.sum()) == len(target) == int((b.target == vocab.mask).sum())


# ----------------------------------------------------------------------------- statistics


def test_frame_sums_give_mean_std_max_steps_and_frame_seconds():
    sums = FrameSums(MODALITIES["MOTION"], "clip")
    assert sums.stats() is None  # nothing kept
    sums.add(np.array([[1.0, 7.0], [3.0, 7.0]], np.float16), {"frame_seconds": 0.1})
    sums.add(np.array([[5.0, 7.0]], np.float16), {"frame_seconds": 0.3})
    sums.add(np.array([[3.0, 7.0], [3.0, 7.0], [3.0, 7.0]], np.float16), {"frame_seconds": 0.2})
    stats = sums.stats()
    values = np.array([1, 3, 5, 3, 3, 3], np.float64)
    assert stats["mean"] == [pytest.approx(values.mean()), 7.0]
    assert stats["std"][0] == pytest.approx(round(values.std(), 6))
    assert stats["std"][1] == FrameSums.STD_FLOOR  # a constant feature is left as it is
    assert stats["max_steps"] == 3
    assert stats["frame_seconds"] == 0.2  # the median
    json.dumps(stats)  # plain numbers, for the manifest


def test_frame_sums_without_durations_and_audio_steps():
    sums = FrameSums(AUDIO_TARGET, "wav")
    sums.add(np.zeros((2, TARGET_WIDTH), np.float16), {})
    sums.add(np.ones((5, TARGET_WIDTH), np.float16), {"frames": 20})
    stats = sums.stats()
    assert "frame_seconds" not in stats and stats["max_steps"] == 5
    assert len(stats["mean"]) == len(stats["std"]) == TARGET_WIDTH
    assert stats["mean"][0] == pytest.approx(5 / 7, abs=1e-6)


def test_materialise_records_the_train_splits_frame_stats(tmp_path, parquet, vocab_path):
    """Text-to-motion materialises with a model that has no MOTION adaptor (it is only generated), and
    the manifest's frame_stats are those of the train split's kept clips."""
    from pipeline.demo import generate

    ins = '<BOS> how does a person " [TEXT:label] " move? <EOS> -> <BOS> [MOTION:clip,sample_rate=2,min_length=16] <EOS>'
    splits = {}
    for split, size in (("train", 3), ("valid", 2)):
        table = generate("motion_label", split, size, 5)
        splits[split] = parquet(tmp_path / f"raw/{split}.parquet", {c: table.column(c).to_pylist() for c in table.column_names})
    out = tmp_path / "out"
    materialise_task(MaterialiseConfig(
        task="t2m", instruction=ins, raw_splits=splits, vocab_path=str(vocab_path), out_dir=str(out),
        progress=False, model=ModelConfig(max_positions=1024, adaptors={})))
    manifest = json.loads((out / "manifest.json").read_text())
    stats = manifest["frame_stats"]["clip.motion"]
    from ofasys.vocab import UnifiedVocab

    vocab = UnifiedVocab.load(vocab_path)
    rows = generate("motion_label", "train", 3, 5).to_pylist()
    clips = [sample_from_row(ins, r, vocab, sides=("output",)) for r in rows]
    arrays = [c.arrays["clip.motion"].astype(np.float64) for c in clips]
    stacked = np.concatenate(arrays)
    np.testing.assert_allclose(stats["mean"], stacked.mean(0), atol=2e-6)
    np.testing.assert_allclose(stats["std"], np.maximum(stacked.std(0), FrameSums.STD_FLOOR), atol=2e-6)
    assert stats["max_steps"] == max(len(a) for a in arrays)
    seconds = [c.meta["meta"]["clip"]["frame_seconds"] for c in clips]
    assert stats["frame_seconds"] == pytest.approx(float(np.median(seconds)))
    assert generation_assets(manifest)[FRAME_STATS]["clip.motion"]["max_steps"] == stats["max_steps"]
