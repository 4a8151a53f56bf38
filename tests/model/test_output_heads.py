"""Output heads: what turns the decoder states of a frame output's placeholders into frames (a diffusion
head for MOTION, a regression head for speech), and how the universal model builds, trains and samples
them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ofasys.data.batch import FrameTargets
from ofasys.data.collate import Collator, Sample
from ofasys.generation.frames import generated_frames
from ofasys.instruction import parse_instruction
from ofasys.modalities import FRAME_STATS
from ofasys.modalities.audio import TARGET_WIDTH
from ofasys.modalities.heads import DiffusionHead, RegressionHead
from ofasys.modalities.motion import FEATURES
from ofasys.model import ModelConfig, UniversalModel, build_model
from ofasys.model.universal import frame_progress

from .helpers import make_batch, tiny_config

D = 8  # d_model of the standalone heads


def diffusion_head(width: int = 5, seed: int = 0) -> DiffusionHead:
    torch.manual_seed(seed)
    head = DiffusionHead(width, D, hidden=16, layers=2, kernel_size=3, sampling_steps=4, loss_weight=1.0)
    torch.nn.init.normal_(head.out.weight, std=0.5)  # zero at init (the mean frame): make it say something
    torch.nn.init.normal_(head.out.bias, std=0.5)
    return head.eval()


def regression_head(width: int = 6, seed: int = 0) -> RegressionHead:
    torch.manual_seed(seed)
    return RegressionHead(width, D, hidden=16, postnet_layers=3, kernel_size=3, loss_weight=1.0).eval()


def inputs(width: int, lengths=(3, 6), seed: int = 1):
    """(states, targets, mask, noise, level) of a batch with the given frame counts."""
    g = torch.Generator().manual_seed(seed)
    b, f = len(lengths), max(lengths)
    states = torch.randn(b, f, D, generator=g)
    targets = torch.randn(b, f, width, generator=g)
    mask = torch.arange(f)[None] < torch.tensor(lengths)[:, None]
    noise = torch.randn(b, f, width, generator=g)
    level = torch.rand(b, generator=g)
    return states, targets, mask, noise, level


def scrambled_padding(t: torch.Tensor, mask: torch.Tensor, seed: int = 9) -> torch.Tensor:
    """`t` with junk (large values) wherever `mask` is False."""
    junk = 100 * torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))
    keep = mask.reshape(*mask.shape, *([1] * (t.dim() - mask.dim())))
    return torch.where(keep, t, junk)


HEADS = [pytest.param(diffusion_head, 5, id="diffusion"), pytest.param(regression_head, 6, id="regression")]


# ----------------------------------------------------------------------------- the heads alone


@pytest.mark.parametrize("make,width", HEADS)
def test_loss_is_a_sum_over_real_frames(make, width):
    head = make(width)
    states, targets, mask, noise, level = inputs(width)
    with torch.no_grad():
        total = head.loss(states, targets, mask, noise, level)
        junk = head.loss(scrambled_padding(states, mask), scrambled_padding(targets, mask), mask,
                         scrambled_padding(noise, mask), level)
        alone = [head.loss(states[i:i + 1, :n], targets[i:i + 1, :n], mask[i:i + 1, :n], noise[i:i + 1, :n],
                           level[i:i + 1]) for i, n in enumerate((3, 6))]
    assert total.dim() == 0 and float(total) > 0
    torch.testing.assert_close(junk, total)  # masked frames change nothing
    torch.testing.assert_close(total, alone[0] + alone[1])  # a sum of each sample's, not a mean
    # two copies of a sample weigh twice one
    with torch.no_grad():
        twice = head.loss(states[1:].repeat(2, 1, 1), targets[1:].repeat(2, 1, 1), mask[1:].repeat(2, 1),
                          noise[1:].repeat(2, 1, 1), level[1:].repeat(2))
    torch.testing.assert_close(twice, 2 * alone[1])


@pytest.mark.parametrize("make,width", HEADS)
def test_generated_frames_do_not_depend_on_batch_mates_padding(make, width):
    head = make(width)
    states, _, mask, noise, _ = inputs(width, lengths=(3, 7))
    together = head.generate(scrambled_padding(states, mask), mask, scrambled_padding(noise, mask))
    alone = head.generate(states[:1, :3], mask[:1, :3], noise[:1, :3])
    assert together.shape == (2, 7, width) and alone.shape == (1, 3, width)
    torch.testing.assert_close(together[0, :3], alone[0], rtol=1e-5, atol=1e-5)
    assert torch.all(together[0, 3:] == 0)  # padding frames are silent
    assert torch.isfinite(together).all()


def test_diffusion_generation_is_deterministic_given_the_noise():
    head = diffusion_head()
    states, _, mask, noise, _ = inputs(5)
    first, second = head.generate(states, mask, noise), head.generate(states, mask, noise)
    assert torch.equal(first, second)
    other = head.generate(states, mask, torch.randn(noise.shape, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(first, other)  # the noise is what a sample is drawn from
    with pytest.raises(ValueError, match="noise"):
        head.generate(states, mask, None)
    with pytest.raises(ValueError, match="noise"):
        head.loss(states, states[..., :5], mask, None, None)


def test_an_untrained_diffusion_head_predicts_the_mean_frame():
    """Its output layer starts at zero: every clean frame is first guessed as 0 (the normalised mean)."""
    torch.manual_seed(0)
    head = DiffusionHead(5, D, hidden=16, layers=1, kernel_size=3, sampling_steps=2, loss_weight=1.0)
    states, targets, mask, noise, level = inputs(5)
    assert torch.all(head.generate(states, mask, noise) == 0)
    expected = (targets.pow(2).mean(-1) * mask).sum()
    torch.testing.assert_close(head.loss(states, targets, mask, noise, level), expected)


def test_regression_generation_ignores_noise_and_is_deterministic():
    head = regression_head()
    states, _, mask, noise, _ = inputs(6)
    first = head.generate(states, mask, None)
    assert torch.equal(first, head.generate(states, mask, noise))
    assert torch.equal(first, head.generate(states, mask))


# ----------------------------------------------------------------------------- the model


def head_config(**overrides) -> ModelConfig:
    return tiny_config(dropout=0.0, **overrides)


MOTION_HEAD = {"MOTION": {"hidden": 16, "layers": 1, "sampling_steps": 3}}


def test_adding_an_output_head_leaves_every_other_weight_bit_identical():
    base = build_model(head_config(), seed=5).state_dict()
    more = build_model(head_config(output_heads=MOTION_HEAD), seed=5).state_dict()
    added = sorted(set(more) - set(base))
    assert set(base) <= set(more) and added and all(k.startswith("output_heads.MOTION.") for k in added)
    assert all(torch.equal(base[k], more[k]) for k in base)
    both = build_model(head_config(output_heads={**MOTION_HEAD, "AUDIO": {"hidden": 8}}), seed=5).state_dict()
    assert all(torch.equal(more[k], both[k]) for k in more)  # a second head changes neither the first nor the rest
    assert any(k.startswith("output_heads.AUDIO.") for k in both)
    again = build_model(head_config(output_heads=MOTION_HEAD), seed=5).state_dict()
    assert all(torch.equal(more[k], again[k]) for k in more)
    other = build_model(head_config(output_heads=MOTION_HEAD), seed=6).state_dict()
    assert not torch.equal(more["output_heads.MOTION.inp.weight"], other["output_heads.MOTION.inp.weight"])


def frame_batch(width: int = FEATURES, seed: int = 0, diffusion: bool = True, modality: str = "MOTION"):
    batch = make_batch(seed)  # 3 samples, 6 decoder positions
    g = torch.Generator().manual_seed(seed + 100)
    lengths = [3, 2, 4]
    index = torch.zeros(3, 4, dtype=torch.long)
    for i, n in enumerate(lengths):
        index[i, :n] = torch.arange(2, 2 + n)
    mask = torch.arange(4)[None] < torch.tensor(lengths)[:, None]
    values = torch.randn(3, 4, width, generator=g) * mask[..., None]
    frames = FrameTargets(modality, index, mask, values,
                          torch.randn(3, 4, width, generator=g) if diffusion else None,
                          torch.rand(3, generator=g) if diffusion else None)
    return dataclasses.replace(batch, frames=frames)


def test_loss_adds_the_heads_loss_to_the_cross_entropy_and_to_nll_sum():
    model = build_model(head_config(output_heads=MOTION_HEAD), seed=0).eval()
    batch = frame_batch()
    with torch.no_grad():
        with_frames, stats = model.loss(batch)
        without, plain = model.loss(dataclasses.replace(batch, frames=None))
    f = batch.frames
    # an untrained diffusion head guesses 0 for every clean frame: its loss is the frames' mean square
    frame_sum = float((f.values.pow(2).mean(-1) * f.mask).sum())
    assert float(with_frames) > float(without)
    assert float(with_frames) == pytest.approx(float(without) + frame_sum / stats["ntokens"], rel=1e-5)
    assert stats["nll_sum"] == pytest.approx(plain["nll_sum"] + frame_sum, rel=1e-5)
    assert stats["ntokens"] == plain["ntokens"] and stats["correct"] == plain["correct"]


def test_loss_weight_scales_the_frame_term_but_not_nll_sum():
    heavy = {"MOTION": {**MOTION_HEAD["MOTION"], "loss_weight": 3.0}}
    model = build_model(head_config(output_heads=heavy), seed=0).eval()
    batch = frame_batch()
    with torch.no_grad():
        with_frames, stats = model.loss(batch)
        without, plain = model.loss(dataclasses.replace(batch, frames=None))
    frame_sum = stats["nll_sum"] - plain["nll_sum"]
    assert float(with_frames) - float(without) == pytest.approx(3.0 * frame_sum / stats["ntokens"], rel=1e-4)


def test_frames_reach_the_head_through_the_indexed_states():
    """The head sees exactly the decoder states at `index` (frame j of sample i: hidden[i, index[i, j]])."""
    model = build_model(head_config(output_heads=MOTION_HEAD), seed=0).eval()
    batch = frame_batch()
    hidden = torch.randn(3, 6, 32)
    states = UniversalModel.frame_states(hidden, batch.frames.index)
    for i in range(3):
        for j in range(4):
            assert torch.equal(states[i, j], hidden[i, batch.frames.index[i, j]])
    with torch.no_grad():  # the frame pass: the same decoder with the progress queries added at `index`
        memory, mask = model.encode(batch)
        total, weight = model.frame_loss(batch.decoder_input, memory, mask, batch.frames)
        f = batch.frames
        head = model.output_heads["MOTION"]
        added = model.progress_inputs(head, torch.Size((*batch.decoder_input.shape, 32)), f.index, f.mask,
                                      frame_progress(f.mask))
        passed = UniversalModel.frame_states(model.decode(batch.decoder_input, memory, mask, added), f.index)
        expected = head.loss(passed, f.values, f.mask, f.noise, f.level)
    assert weight == 1.0 and torch.equal(total, expected)
    for i in range(3):  # frame j of n gets j / n, only at its own input
        n = int(f.mask[i].sum())
        assert torch.allclose(frame_progress(f.mask)[i, :n], torch.arange(n) / n)


def test_a_missing_output_head_is_refused_naming_the_heads():
    model = UniversalModel(head_config(output_heads=MOTION_HEAD))
    with pytest.raises(ValueError, match=r"no AUDIO output head \(it has: MOTION\).*model\.output_heads"):
        model.output_head("AUDIO")
    with pytest.raises(ValueError, match=r"it has: none"):
        UniversalModel(head_config()).loss(frame_batch())
    assert model.output_head("MOTION") is model.output_heads["MOTION"]


@pytest.mark.parametrize("heads,message", [
    ({"TEXT": {}}, r"output_heads\.TEXT: no such output head; modalities with one: \['AUDIO', 'MOTION'\]"),
    ({"IMAGE": {}}, r"output_heads\.IMAGE: no such output head"),
    ({"MOTION": {"sampling_steps": 0}}, r"output_heads\.MOTION: sampling_steps must be positive"),
    ({"MOTION": {"kernel_size": 4}}, r"output_heads\.MOTION: kernel_size must be a positive odd number"),
    ({"AUDIO": {"kernel_size": 2}}, r"output_heads\.AUDIO: kernel_size must be a positive odd number"),
    ({"AUDIO": {"loss_weight": 0.0}}, r"output_heads\.AUDIO: loss_weight must be positive"),
    ({"AUDIO": {"bogus": 1}}, r"output_heads\.AUDIO: .*bogus: unknown key"),
    ({"MOTION": 3}, r"output_heads\.MOTION: must be a mapping"),
])
def test_model_config_rejects_bad_output_heads(heads, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(output_heads=heads)


def test_model_config_output_heads_round_trip_and_defaults():
    config = ModelConfig(output_heads={"MOTION": {"sampling_steps": 7}})
    assert config.output_head("MOTION").sampling_steps == 7 and config.output_head("MOTION").hidden == 128
    more = config.with_output_heads(["AUDIO", "MOTION"])
    assert more.output_heads == {"MOTION": {"sampling_steps": 7}, "AUDIO": {}}  # existing settings kept
    assert config.output_heads == {"MOTION": {"sampling_steps": 7}}  # a copy, not a change
    assert ModelConfig.from_dict(more.to_dict()) == more


@pytest.mark.parametrize("modality,heads,width,diffusion", [
    ("MOTION", MOTION_HEAD, FEATURES, True),
    ("AUDIO", {"AUDIO": {"hidden": 16}}, TARGET_WIDTH, False),
])
def test_a_few_steps_reduce_the_frame_loss_on_a_fixed_batch(modality, heads, width, diffusion):
    torch.manual_seed(0)
    model = build_model(head_config(output_heads=heads), seed=1)
    batch = frame_batch(width, diffusion=diffusion, modality=modality)
    t = torch.arange(4, dtype=torch.float32)[None, :, None]
    pattern = torch.sin(t + torch.linspace(0, 3, width)[None, None])  # the same learnable clip for all
    batch.frames.values = pattern.expand(3, -1, -1) * batch.frames.mask[..., None]

    def frame_part() -> float:
        model.eval()
        with torch.no_grad():
            _, s = model.loss(batch)
            _, p = model.loss(dataclasses.replace(batch, frames=None))
        model.train()
        return s["nll_sum"] - p["nll_sum"]

    before = frame_part()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = frame_part()
    assert before > 0 and after < 0.5 * before


# ----------------------------------------------------------------------------- generated frames


T2M = "<BOS> [TEXT:label] <EOS> -> <BOS> [MOTION:clip] <EOS>"


@pytest.fixture(scope="module")
def vocab():
    from ofasys.text_tokenizer import train_text_tokenizer
    from ofasys.vocab import UnifiedVocab

    words = "zero one two three four five six seven".split()
    return UnifiedVocab.build(train_text_tokenizer([" ".join(words)] * 5 + words, vocab_size=300), num_bins=16)


@pytest.fixture(scope="module")
def frame_model(vocab):
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1,
                         dropout=0.0, adaptors={}, output_heads=MOTION_HEAD)
    model = build_model(config, seed=0)
    head = model.output_heads["MOTION"]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an untrained head's output is the mean frame whatever the states: make it vary
        head.out.weight.copy_(0.3 * torch.randn(head.out.weight.shape, generator=g))
    return model.eval()


def label_sample(vocab, key: str, label: str) -> Sample:
    return Sample(key, {"meta": {}}, {"label.text": np.asarray(vocab.encode_text(label), np.int32)})


def test_a_samples_generated_frames_do_not_depend_on_its_batch(vocab, frame_model):
    col = Collator(parse_instruction(T2M), vocab, "t2m", seed=2)
    a = label_sample(vocab, "test-000000000", "one")
    b = label_sample(vocab, "test-000000001", "two three four five six")
    m, e = vocab.mask, vocab.eos
    gen_a, gen_b = [m] * 3 + [e], [m] * 6 + [e]

    def frames(samples, generated):
        batch = col.collate_for_generation(samples)
        plans = [col.plan(s) for s in samples]
        return generated_frames(frame_model, batch, plans, generated, [s.key for s in samples], col)

    alone = frames([a], [gen_a])[0]["clip"]
    together = frames([b, a], [gen_b, gen_a])
    assert alone.shape == (3, FEATURES) and together[0]["clip"].shape == (6, FEATURES)
    np.testing.assert_allclose(together[1]["clip"], alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(frames([a], [gen_a])[0]["clip"], alone)  # a second run: the same frames
    renamed = label_sample(vocab, "test-000000009", "one")
    assert not np.allclose(frames([renamed], [gen_a])[0]["clip"], alone)  # noise keyed by the sample


def test_generated_frames_are_in_the_stored_units(vocab, frame_model):
    mean = np.linspace(-2, 2, FEATURES)
    flat = {FRAME_STATS: {"clip.motion": {"mean": mean.tolist(), "std": [0.0] * FEATURES, "max_steps": 4}}}
    col = Collator(parse_instruction(T2M), vocab, "t2m", seed=2, assets=flat)
    a = label_sample(vocab, "test-000000000", "one")
    m, e = vocab.mask, vocab.eos
    out = generated_frames(frame_model, col.collate_for_generation([a]), [col.plan(a)], [[m, m, e]], [a.key], col)
    np.testing.assert_allclose(out[0]["clip"], np.tile(mean, (2, 1)), atol=1e-6)  # frames x std + mean
    plain = Collator(parse_instruction(T2M), vocab, "t2m", seed=2)
    raw = generated_frames(frame_model, plain.collate_for_generation([a]), [plain.plan(a)], [[m, m, e]], [a.key], plain)
    scaled = {FRAME_STATS: {"clip.motion": {"mean": [1.0] * FEATURES, "std": [2.0] * FEATURES, "max_steps": 4}}}
    col2 = Collator(parse_instruction(T2M), vocab, "t2m", seed=2, assets=scaled)
    out2 = generated_frames(frame_model, col2.collate_for_generation([a]), [col2.plan(a)], [[m, m, e]], [a.key], col2)
    np.testing.assert_allclose(out2[0]["clip"], raw[0]["clip"] * 2 + 1, rtol=1e-5, atol=1e-5)


def test_generated_speech_is_denormalised_by_its_own_arrays_statistics(vocab):
    tts = "<BOS> [TEXT:text] <EOS> -> <BOS> [AUDIO:wav,preprocess=audio_tgt_fbank] <EOS>"
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1,
                         dropout=0.0, adaptors={}, output_heads={"AUDIO": {"hidden": 16}})
    model = build_model(config, seed=0).eval()
    mean = np.linspace(-9, -1, TARGET_WIDTH)
    flat = {FRAME_STATS: {"wav.audio_tgt": {"mean": mean.tolist(), "std": [0.0] * TARGET_WIDTH, "max_steps": 4}}}
    col = Collator(parse_instruction(tts), vocab, "tts", assets=flat)
    s = Sample("test-000000000", {"meta": {}}, {"text.text": np.asarray(vocab.encode_text("one two"), np.int32)})
    m, e = vocab.mask, vocab.eos
    out = generated_frames(model, col.collate_for_generation([s]), [col.plan(s)], [[m, m, m, e]], [s.key], col)
    assert out[0]["wav"].shape == (3, TARGET_WIDTH)
    np.testing.assert_allclose(out[0]["wav"], np.tile(mean, (3, 1)), atol=1e-6)


def test_generated_frames_without_placeholders_or_frame_outputs(vocab, frame_model):
    col = Collator(parse_instruction(T2M), vocab, "t2m")
    a = label_sample(vocab, "test-000000000", "one")
    batch = col.collate_for_generation([a, a])
    m, e = vocab.mask, vocab.eos
    out = generated_frames(frame_model, batch, [col.plan(a)] * 2, [[], [m, e]], ["x", "y"], col)
    assert out[0] == {} and out[1]["clip"].shape == (1, FEATURES)
    text = Collator(parse_instruction("<BOS> [TEXT:q] <EOS> -> <BOS> [TEXT:a] <EOS>"), vocab, "qa")
    q = Sample("k", {"meta": {}}, {"q.text": np.asarray(vocab.encode_text("one"), np.int32)})
    assert generated_frames(frame_model, text.collate_for_generation([q]), [text.plan(q)], [[5, e]], ["k"], text) == [{}]


def test_output_frames_keeps_the_models_mode(vocab, frame_model):
    col = Collator(parse_instruction(T2M), vocab, "t2m")
    a = label_sample(vocab, "test-000000000", "one")
    m, e = vocab.mask, vocab.eos
    frame_model.train()
    try:
        generated_frames(frame_model, col.collate_for_generation([a]), [col.plan(a)], [[m, e]], [a.key], col)
        assert frame_model.training
    finally:
        frame_model.eval()
