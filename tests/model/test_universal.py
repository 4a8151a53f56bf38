import dataclasses

import pytest
import torch

from ofasys.data.batch import TOKENS, Batch, EncoderSegment
from ofasys.generation import beam_search
from ofasys.model import ModelConfig, UniversalModel, build_model

from .helpers import VOCAB, make_batch, pad_segment, sample_rows, tiny_config


def test_forward_shapes_with_tokens_image_tokens():
    torch.manual_seed(0)
    model = UniversalModel(tiny_config())
    batch = make_batch()
    memory, mask = model.encode(batch)
    assert memory.shape == (3, 5 + 16 + 4, 32)  # 32 px image, stride 8 -> 16 image tokens
    assert mask[:, 5:21].all() and mask.sum(1).tolist() == [5 + 16 + 2, 3 + 16 + 4, 1 + 16 + 3]
    logits = model(batch)
    assert logits.shape == (3, 6, VOCAB) and torch.isfinite(logits).all()


def test_loss_ignores_positions_without_loss():
    torch.manual_seed(0)
    model = UniversalModel(tiny_config()).eval()
    batch = make_batch()
    loss, stats = model.loss(batch, label_smoothing=0.1)
    assert stats["ntokens"] == int(batch.loss_mask.sum()) == 11
    assert isinstance(stats["nll_sum"], float) and isinstance(stats["correct"], int)
    changed = batch.target.clone()
    changed[~batch.loss_mask] = (changed[~batch.loss_mask] + 7) % VOCAB
    loss2, stats2 = model.loss(dataclasses.replace(batch, target=changed), label_smoothing=0.1)
    assert torch.equal(loss, loss2) and stats == stats2
    # ...while changing a target that carries loss does change it (the test can fail).
    changed[batch.loss_mask] = (changed[batch.loss_mask] + 7) % VOCAB
    loss3, _ = model.loss(dataclasses.replace(batch, target=changed), label_smoothing=0.1)
    assert not torch.allclose(loss, loss3)
    # Without smoothing the loss is the mean NLL the stats report.
    with torch.no_grad():
        loss0, stats0 = model.loss(batch)
    assert abs(float(loss0) - stats0["nll_sum"] / stats0["ntokens"]) < 1e-5


def test_gradients_reach_image_adaptor_and_embeddings():
    torch.manual_seed(0)
    model = UniversalModel(tiny_config())
    loss, _ = model.loss(make_batch())
    loss.backward()
    for name in ["adaptors.IMAGE.stem.0.weight", "adaptors.IMAGE.proj.weight", "adaptors.IMAGE.row_pos.weight",
                 "embed_tokens.weight", "segment_embeddings.tokens.weight", "segment_embeddings.IMAGE.weight",
                 "encoder_positions.weight",
                 "decoder_positions.weight", "decoder_layers.1.cross_attn.attn.head_scale"]:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = UniversalModel(tiny_config()).eval()
    batch = make_batch()
    gen = torch.Generator().manual_seed(1)
    first, image, last = batch.segments
    padded = dataclasses.replace(
        batch, segments=[pad_segment(first, 3, gen), image, pad_segment(last, 2, gen)])
    with torch.no_grad():
        logits, logits_padded = model(batch), model(padded)
        memory, mask = model.encode(batch)
        memory_p, mask_p = model.encode(padded)
    torch.testing.assert_close(logits, logits_padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory[mask], memory_p[mask_p], atol=1e-5, rtol=1e-5)
    # Right-padding the decoder input does not change earlier positions either (causal).
    longer = torch.cat([batch.decoder_input, torch.zeros(3, 2, dtype=torch.long)], 1)
    with torch.no_grad():
        logits_long = model(dataclasses.replace(batch, decoder_input=longer))
    torch.testing.assert_close(logits, logits_long[:, :6], atol=1e-5, rtol=1e-5)


def test_sample_with_no_real_encoder_token_stays_finite():
    model = UniversalModel(tiny_config()).eval()
    seg = EncoderSegment(TOKENS, torch.zeros(2, 3, dtype=torch.long),
                         torch.tensor([[True, False, False], [False, False, False]]))
    batch = Batch(task="t", keys=["a", "b"], segments=[seg], decoder_input=torch.ones(2, 2, dtype=torch.long))
    assert torch.isfinite(model(batch)).all()


def test_bf16_forward_and_backward():
    torch.manual_seed(0)
    model = UniversalModel(tiny_config()).to(torch.bfloat16)
    loss, stats = model.loss(make_batch())
    loss.backward()
    assert torch.isfinite(loss) and model(make_batch()).dtype == torch.bfloat16
    assert model.embed_tokens.weight.grad.dtype == torch.bfloat16


def test_memorises_four_sequences():
    """The whole stack can learn: 4 image -> text pairs are memorised in 150 steps. The text
    segments are identical across samples, so the first output token can only come from the image."""
    torch.manual_seed(0)
    model = UniversalModel(tiny_config(dropout=0.0, d_model=64, ffn_dim=128))
    batch = make_batch(seed=3, batch=4, dec_len=8)
    for seg in batch.segments:
        if seg.kind == TOKENS:
            seg.tensor[:], seg.mask[:] = seg.tensor[0].clone(), seg.mask[0].clone()
    assert len(set(batch.target[:, 0].tolist())) == 4
    batch.loss_mask[:] = True
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, stats = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()  # BatchNorm now uses its running statistics
    with torch.no_grad():
        loss, stats = model.loss(batch)
    assert loss.item() < 0.1 and stats["correct"] == stats["ntokens"] == 32


# ---------------------------------------------------------------- generation


class AnyPlan:
    """OutputPlan stand-in: `allowed` from a callable, done at <eos>."""

    def __init__(self, allowed=lambda g: None, max_new_tokens=7):
        self._allowed, self.max_new_tokens = allowed, max_new_tokens

    def allowed(self, generated):
        return self._allowed(generated)

    def done(self, generated):
        return bool(generated) and generated[-1] == 2


class UncachedDecoder:
    """Reference step decoder: re-runs the full decoder over the whole history at every step."""

    def __init__(self, model, batch, beam):
        memory, mask = model.encode(batch)
        self.model = model
        self.memory, self.mask = memory.repeat_interleave(beam, 0), mask.repeat_interleave(beam, 0)
        self.history = torch.zeros(len(self.memory), 0, dtype=torch.long)

    def step(self, tokens):
        self.history = torch.cat([self.history, tokens[:, None]], 1)
        return self.model.output_logits(self.model.decode(self.history, self.memory, self.mask))[:, -1]

    def reorder(self, index):
        self.history = self.history[index]


def generation_batch(seed=0):
    batch = make_batch(seed=seed)
    prefix = torch.tensor([[1, 7, 8, 9], [1, 0, 0, 0], [1, 5, 0, 0]])  # different prefix lengths
    return dataclasses.replace(batch, decoder_input=prefix, target=None, loss_mask=None)


def random_model(seed=0):
    torch.manual_seed(seed)
    model = UniversalModel(tiny_config(init_std=0.3)).eval()  # large init: peaky, varied outputs
    return model


def test_cached_decoding_matches_full_recomputation():
    model, batch = random_model(), generation_batch()
    with torch.no_grad():
        cached, full = model.incremental_decoder(batch, beam_size=2), UncachedDecoder(model, batch, 2)
        gen = torch.Generator().manual_seed(0)
        for step in range(5):
            tokens = torch.randint(3, VOCAB, (6,), generator=gen)
            torch.testing.assert_close(cached.step(tokens), full.step(tokens), atol=1e-4, rtol=1e-4)
            index = torch.tensor([1, 0, 2, 2, 5, 4])  # beams swap and duplicate within a sample
            cached.reorder(index)
            full.reorder(index)
    for beam in (1, 3):
        plans = [AnyPlan() for _ in range(3)]
        lengths = (batch.decoder_input != 0).sum(1).tolist()
        prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
        caps = [7, 7, 7]
        ref = beam_search(UncachedDecoder(model, batch, beam), prefixes, plans, beam_size=beam, eos_id=2,
                          max_new_tokens=caps)
        assert model.generate(batch, plans, beam_size=beam) == [h.tokens for h in ref]
        assert any(len(h.tokens) > 1 for h in ref)  # the comparison covers several steps



def test_cached_decoder_computes_tied_beams_once_and_parts_them_exactly():
    """While every beam of a sample was fed the same tokens the cache holds one row per sample; the
    logits are those of full recomputation before and after the beams part."""
    model, batch = random_model(2), generation_batch(2)
    with torch.no_grad():
        cached, full = model.incremental_decoder(batch, beam_size=3), UncachedDecoder(model, batch, 3)
        for step, tokens in enumerate(([5, 5, 5, 6, 6, 6, 7, 7, 7], [8, 8, 8, 9, 9, 9, 4, 4, 4],
                                       [8, 9, 10, 11, 12, 13, 14, 15, 16], [3, 4, 5, 6, 7, 8, 9, 10, 11])):
            tokens = torch.tensor(tokens)
            torch.testing.assert_close(cached.step(tokens), full.step(tokens), atol=1e-4, rtol=1e-4)
            assert cached.caches[0]["k"].shape[0] == (3 if step < 2 else 9)
            index = torch.tensor([2, 0, 0, 3, 5, 4, 8, 8, 7])
            cached.reorder(index)
            full.reorder(index)


def test_generate_honours_per_sample_prefixes():
    model, batch = random_model(1), generation_batch(1)
    for beam in (1, 2):
        together = model.generate(batch, [AnyPlan() for _ in range(3)], beam_size=beam)
        for i in range(3):
            n = int((batch.decoder_input[i] != 0).sum())
            alone = dataclasses.replace(
                batch, keys=[batch.keys[i]], decoder_input=batch.decoder_input[i:i + 1, :n],
                segments=sample_rows(batch, i))
            assert model.generate(alone, [AnyPlan()], beam_size=beam) == [together[i]]


def test_generate_obeys_box_constraint():
    bins = [30, 31, 32, 33]
    plan = lambda: AnyPlan(allowed=lambda g: bins if len(g) < 4 else [2])  # noqa: E731
    model, batch = random_model(2), generation_batch(2)
    model.train()
    for beam in (1, 4):
        out = model.generate(batch, [plan() for _ in range(3)], beam_size=beam)
        assert all(len(o) == 4 and set(o) <= set(bins) for o in out)
    assert model.training  # generate restores the mode it found


def test_beam_score_is_the_models_and_not_worse_than_greedy():
    model, batch = random_model(3), generation_batch(3)
    plans = [AnyPlan(max_new_tokens=6) for _ in range(3)]
    greedy = model.search(batch, plans, beam_size=1)
    beam = model.search(batch, plans, beam_size=4)
    for g, b in zip(greedy, beam):
        assert b.score >= g.score - 1e-6
    assert any(b.score > g.score + 1e-3 for g, b in zip(greedy, beam))  # this seed has a case
    # The reported log-prob is the model's own: recompute it with one teacher-forced pass.
    with torch.no_grad():
        for i, h in enumerate(beam):
            n = int((batch.decoder_input[i] != 0).sum())
            prefix = batch.decoder_input[i, :n].tolist()
            ended = len(h.tokens) < 6  # stopped by <eos>, which is scored too
            seq = torch.tensor([prefix + h.tokens + ([2] if ended else [])])
            one = dataclasses.replace(
                batch, decoder_input=seq[:, :-1], segments=sample_rows(batch, i))
            logp = model(one).log_softmax(-1)[0, n - 1:].gather(-1, seq[0, n:, None]).sum()
            assert abs(float(logp) - h.logprob) < 1e-3


def test_token_logprobs_are_the_models_own_and_sum_to_the_beams_logprob():
    """What scores a detection's objects: each generated id's log-probability, one teacher-forced pass
    for the whole batch (samples of different prefix and output lengths), equal to the search's."""
    model, batch = random_model(3), generation_batch(3)
    plans = [AnyPlan(max_new_tokens=m) for m in (6, 3, 5)]
    hyps = model.search(batch, plans, beam_size=2)
    per_token = model.token_logprobs(batch, [h.tokens for h in hyps])
    assert [len(lp) for lp in per_token] == [len(h.tokens) for h in hyps]
    assert all(x <= 0 for lp in per_token for x in lp)
    # a hypothesis cut at max_new_tokens has no final <eos>: the search's total is exactly its ids' sum
    cut = [(h, lp) for h, lp, plan in zip(hyps, per_token, plans) if len(h.tokens) == plan.max_new_tokens]
    assert cut  # this seed has such a case
    for h, lp in cut:
        assert abs(sum(lp) - h.logprob) < 1e-3
    assert model.token_logprobs(batch, [[], [], []]) == [[], [], []]


def test_state_dict_round_trips_through_safetensors():
    """The export format (model.safetensors + config) rebuilds an identical model; the tied
    embedding is stored once, so safetensors does not refuse aliased tensors."""
    from safetensors.torch import load, save

    torch.manual_seed(0)
    model = UniversalModel(tiny_config()).eval()
    blob = save(model.state_dict())
    clone = UniversalModel(type(model.config).from_dict(model.config.to_dict())).eval()
    clone.load_state_dict(load(blob))
    batch = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), clone(batch), atol=0, rtol=0)


def test_generation_length_caps():
    model, batch = random_model(4), generation_batch(4)
    no_eos = lambda g: range(3, VOCAB)  # noqa: E731
    out = model.generate(batch, [AnyPlan(no_eos, max_new_tokens=9) for _ in range(3)], max_new_tokens=2)
    assert [len(o) for o in out] == [2, 2, 2]
    torch.manual_seed(0)
    short = UniversalModel(tiny_config(max_positions=30, init_std=0.3)).eval()  # decoder fits 30 positions
    out = short.generate(batch, [AnyPlan(no_eos, max_new_tokens=100) for _ in range(3)], beam_size=2)
    assert [len(o) for o in out] == [27, 30, 29]  # prefix + generated - 1 fed positions <= 30


def test_embedding_norms_are_optional():
    with_norms = sum(p.numel() for p in UniversalModel(tiny_config()).parameters())
    plain = sum(p.numel() for p in UniversalModel(tiny_config(embed_norm=False)).parameters())
    assert with_norms - plain == 2 * (2 * 32)  # encoder and decoder embedding LayerNorms
    model, batch = UniversalModel(tiny_config(embed_norm=False)).eval(), make_batch()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_ofa_presets_keep_ofa_norms_and_init():
    for name in ("tiny", "base", "huge"):
        cfg = ModelConfig.preset(name)
        assert (cfg.normformer, cfg.embed_norm, cfg.init_std) == (True, True, 0.02)
    cpu = ModelConfig.preset("tiny-cpu")
    assert (cpu.normformer, cpu.embed_norm) == (False, False)


def test_build_model_depends_on_config_and_seed_only_and_leaves_the_callers_rng_alone():
    config = tiny_config()
    torch.manual_seed(123)
    torch.rand(3)
    state_before = torch.get_rng_state()
    first = build_model(config, seed=7).state_dict()
    assert torch.equal(torch.get_rng_state(), state_before)  # the caller's stream is untouched
    torch.rand(1000)  # a caller that consumed a different amount of global randomness
    second = build_model(config, seed=7).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build_model(config, seed=8).state_dict()
    assert not torch.equal(first["embed_tokens.weight"], other["embed_tokens.weight"])
    # The seed is mixed with a purpose tag: the weights are not those of a plain torch.manual_seed(7).
    torch.manual_seed(7)
    assert not torch.equal(UniversalModel(config).embed_tokens.weight, first["embed_tokens.weight"])


# ---------------------------------------------------------------- adaptors keyed by modality


def test_adding_an_adaptor_leaves_every_other_weight_bit_identical():
    """Per-modality seeded init: one more adaptor entry adds its own modules and changes nothing
    else, whatever the entries' order; dropping one leaves the rest as they were too."""
    config = tiny_config()
    base = build_model(config, seed=5).state_dict()
    more = build_model(config.with_adaptors(["AUDIO"]), seed=5).state_dict()
    added = sorted(set(more) - set(base))
    assert set(base) <= set(more) and added and all(k.startswith(("adaptors.AUDIO.", "segment_embeddings.AUDIO."))
                                                   for k in added)
    assert all(torch.equal(base[k], more[k]) for k in base)
    reordered = dataclasses.replace(config, adaptors={"AUDIO": {}, **config.adaptors})
    assert all(torch.equal(more[k], v) for k, v in build_model(reordered, seed=5).state_dict().items())
    text_only = build_model(dataclasses.replace(config, adaptors={}), seed=5).state_dict()
    assert not any(k.startswith("adaptors.") for k in text_only)
    assert all(torch.equal(base[k], v) for k, v in text_only.items())
    # Each part has a stream of its own: the two segment embeddings are not the same draw.
    assert not torch.equal(base["segment_embeddings.tokens.weight"], base["segment_embeddings.IMAGE.weight"])


def test_a_segment_without_an_adaptor_is_refused_naming_the_models_adaptors():
    model = UniversalModel(tiny_config()).eval()
    batch = make_batch()
    audio = EncoderSegment("AUDIO", torch.zeros(3, 8, 80), torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"this model has no AUDIO adaptor \(it has: IMAGE\); .*model.adaptors"):
        model(dataclasses.replace(batch, segments=[*batch.segments, audio]))


def test_a_modality_segment_goes_through_its_adaptor_and_keeps_its_mask():
    """The generic path: the segment's tensor and mask go to the adaptor named by its kind, and the
    mask the adaptor returns (padded audio frames, subsampled x4) is the encoder's mask there."""
    torch.manual_seed(0)
    model = UniversalModel(tiny_config().with_adaptors(["AUDIO"])).eval()
    batch = make_batch()
    frames = torch.randn(3, 10, 80)
    mask = torch.arange(10)[None] < torch.tensor([10, 5, 1])[:, None]
    audio = EncoderSegment("AUDIO", frames, mask)
    with torch.no_grad():
        memory, enc_mask = model.encode(dataclasses.replace(batch, segments=[batch.segments[0], audio]))
    assert memory.shape == (3, 5 + 3, 32)  # 10 frames -> ceil(10 / 4) = 3 positions
    assert enc_mask[:, 5:].sum(1).tolist() == [3, 2, 1]
    assert torch.isfinite(memory).all()


def test_num_parameters_counts_every_adaptor_on_the_meta_device():
    config = tiny_config().with_adaptors(["AUDIO"])
    real = sum(p.numel() for p in build_model(config, seed=0).parameters())
    assert UniversalModel.num_parameters(config) == real
    assert real > UniversalModel.num_parameters(tiny_config())
