"""The universal encoder-decoder: every task is "segments in, tokens out".

Encoder: each `EncoderSegment` of a `Batch` becomes a run of vectors (token segments through the
shared embedding, a modality's segment through that modality's adaptor, looked up by name in
`adaptors`), each run gets the segment embedding of its kind (so the model knows image from text
from audio), the runs are concatenated in order and get 1-D positions.
Decoder: causal self-attention over output tokens plus cross-attention to the encoder. The token
embedding is shared by encoder, decoder and the output projection (tied), because text, bins, codes
and phones all live in one unified vocabulary.

Adaptors and segment embeddings are keyed by modality name (`config.adaptors`) and each draws its
initial weights from its own seed, so adding a modality adds modules without changing the name,
shape or initial value of any existing weight: older checkpoints still load
(`ofasys.model.checkpoint_compat`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ofasys.data.batch import TOKENS, Batch
from ofasys.generation.beam import PRUNE_AT, Hypothesis, OutputConstraint, beam_search

from .cached_decoder import CachedDecoder
from .config import ModelConfig
from .transformer import KV, DecoderLayer, EncoderLayer

INIT_SEED_TAG = 0x494E4954  # "INIT": mixed into the run seed for the initial weights' stream
ADAPTOR_SEED_TAG = 0x41444150  # "ADAP": a modality's adaptor, with the modality's name
SEGMENT_SEED_TAG = 0x5345474D  # "SEGM": a segment kind's embedding, with the kind's name
HEAD_SEED_TAG = 0x48454144  # "HEAD": a modality's output head, with the modality's name


def name_seed_part(name: str) -> int:
    """A name as one integer for `derive_seed` (its UTF-8 bytes, big-endian): under one seed and tag,
    distinct names get distinct streams, and the value does not depend on the process (unlike `hash`)."""
    return int.from_bytes(name.encode("utf-8"), "big")


def part_seed(seed: int, *tags: int | str) -> int:
    """The seed of one independently initialised part of the model (see `UniversalModel`)."""
    from ofasys.training.seeding import derive_seed

    return derive_seed(seed, INIT_SEED_TAG, *(name_seed_part(t) if isinstance(t, str) else t for t in tags))


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from the CPU generator seeded with `seed` inside, leaving the caller's generator as it
    was; with None, draw from the global generator as it stands (what plain construction does)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class SharedEmbedding(nn.Embedding):
    """The unified-vocabulary embedding, which is also the tied output projection.

    Both uses go through `forward` on purpose: DeepSpeed ZeRO-3 gathers a partitioned weight only
    inside its module's forward (hooks), so reading `.weight` from elsewhere sees an empty shard.
    One module (rather than a second Linear sharing the Parameter) also keeps the state dict free
    of aliased tensors, which safetensors refuses to save.
    """

    def forward(self, x: torch.Tensor, *, project: bool = False) -> torch.Tensor:
        """ids -> vectors; or, with project=True, vectors -> logits over the vocabulary."""
        return F.linear(x, self.weight) if project else super().forward(x)


class UniversalModel(nn.Module):
    """See the module docstring. With `seed`, the initial weights are a function of (config, seed):

    - the core (token embedding, positions, layers, norms) from `derive_seed(seed, INIT_SEED_TAG)`;
    - each modality's adaptor from `part_seed(seed, ADAPTOR_SEED_TAG, name)` and each segment
      embedding from `part_seed(seed, SEGMENT_SEED_TAG, kind)`,
    so a config with one more adaptor entry gives a model whose other weights are bit-identical.
    Without `seed` every part draws from the global generator in turn (tests that seed torch
    themselves); use `build_model` for a training run.
    """

    def __init__(self, config: ModelConfig, seed: int | None = None):
        super().__init__()
        self.config = config
        d = config.d_model
        with _seeded(None if seed is None else part_seed(seed)):
            self.embed_tokens = SharedEmbedding(config.vocab_size, d)
            self.encoder_positions = nn.Embedding(config.max_positions, d)
            self.encoder_embed_norm = nn.LayerNorm(d) if config.embed_norm else nn.Identity()
            self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
            self.encoder_norm = nn.LayerNorm(d)
            self.decoder_positions = nn.Embedding(config.max_positions, d)
            self.decoder_embed_norm = nn.LayerNorm(d) if config.embed_norm else nn.Identity()
            self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
            self.decoder_norm = nn.LayerNorm(d)
            self.dropout = nn.Dropout(config.dropout)
            self.apply(self._init_weights)  # the core only: adaptors are not attached yet

        from ofasys.modalities import MODALITIES

        # Modality name -> its adaptor (`Modality.build_adaptor`), one per `config.adaptors` entry.
        self.adaptors = nn.ModuleDict()
        # `TOKENS` and each adaptor's modality name -> a 1 x d embedding added to that segment kind;
        # each its own Embedding(1, d) called through forward (DeepSpeed ZeRO-3 gathers a partitioned
        # weight only inside its module's forward).
        self.segment_embeddings = nn.ModuleDict()
        for kind in [TOKENS, *sorted(config.adaptors)]:
            with _seeded(None if seed is None else part_seed(seed, SEGMENT_SEED_TAG, kind)):
                self.segment_embeddings[kind] = nn.Embedding(1, d)
                self._init_weights(self.segment_embeddings[kind])
            if kind == TOKENS:
                continue
            with _seeded(None if seed is None else part_seed(seed, ADAPTOR_SEED_TAG, kind)):
                self.adaptors[kind] = MODALITIES[kind].build_adaptor(config)
                self.adaptors[kind].apply(self._init_weights)
        # Modality name -> its output head (`Modality.build_output_head`), one per `config.output_heads`
        # entry: what turns decoder states into frames (MOTION, speech). Heads keep their own init.
        self.output_heads = nn.ModuleDict()
        for kind in sorted(config.output_heads):
            with _seeded(None if seed is None else part_seed(seed, HEAD_SEED_TAG, kind)):
                self.output_heads[kind] = MODALITIES[kind].build_output_head(config)

    # ------------------------------------------------------------------ training-time options
    activation_checkpointing: bool = False
    """Recompute each encoder / decoder layer in the backward (see `set_activation_checkpointing`)."""

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Keep only each layer's input in a training forward and recompute the layer in the backward
        (`torch.utils.checkpoint`, non-reentrant, the RNG state saved so dropout replays identically):
        activations kept are each layer's input plus one layer's intermediates at a time, for about a
        third more compute. A per-instance
        switch, not a config field: it changes memory, not the model, so exports do not record it."""
        self.activation_checkpointing = bool(enabled)

    def compile_layers(self, **options) -> None:
        """`torch.compile` each encoder and decoder layer in place (`nn.Module.compile`, `options` as
        torch.compile's). Layers take tensors only, so they trace without graph breaks whatever the
        batch's segments, and identical layers share one compiled graph; the model's own Python (batch
        handling, loss selection) stays eager. State dict keys are unchanged."""
        for layer in (*self.encoder_layers, *self.decoder_layers):
            layer.compile(**options)

    def _run_layer(self, layer: nn.Module, *args: torch.Tensor | KV) -> torch.Tensor:
        """`layer(*args)`, through activation checkpointing when it is on and a backward will follow."""
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 style: N(0, init_std) everywhere, residual output projections scaled down by
        sqrt(2 x layers) so that the sum of many residual branches starts at a sane scale. (Not a
        zero init: NormFormer's post-attention LayerNorm of an all-zero branch has huge gradients.)
        Adaptors' convolutions keep their own (kaiming / BatchNorm) init."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_out", False):
                layers = self.config.encoder_layers + self.config.decoder_layers
                std = std / math.sqrt(2 * layers)
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)

    # ------------------------------------------------------------------ encoder
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B x S x d encoder output, B x S bool mask, True = real token)."""
        parts, masks = [], []
        for seg in batch.segments:
            if seg.kind == TOKENS:
                x, mask = self.embed_tokens(seg.tensor), seg.mask
            else:
                x, mask = self.adaptor(seg.kind)(seg.tensor, seg.mask)
                if mask is None:
                    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            row = torch.zeros(1, dtype=torch.long, device=x.device)  # the embedding's only row
            parts.append(x + self.segment_embeddings[seg.kind](row))
            masks.append(mask.bool())
        if not parts:
            raise ValueError("a batch needs at least one encoder segment")
        x, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        # Positions count real tokens only, so padding inside an earlier segment does not shift the
        # positions of later ones: a sample means the same thing however its batch was padded.
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        if int(pos.max()) >= self.config.max_positions:
            raise ValueError(f"encoder sequence of {int(pos.max()) + 1} tokens exceeds "
                             f"max_positions={self.config.max_positions}")
        x = x + self.encoder_positions(pos)
        x = self.dropout(self.encoder_embed_norm(x))
        # A sample with no real token at all would give NaN attention rows; let it see its first slot.
        attn_mask = mask.clone()
        attn_mask[:, 0] |= ~mask.any(1)
        attn_mask = attn_mask[:, None, None, :]
        for layer in self.encoder_layers:
            x = self._run_layer(layer, x, attn_mask)
        return self.encoder_norm(x), mask

    def adaptor(self, kind: str) -> nn.Module:
        """The adaptor of modality `kind`; ValueError naming the adaptors this model has."""
        if kind not in self.adaptors:
            have = ", ".join(self.adaptors) or "none"
            raise ValueError(f"this model has no {kind} adaptor (it has: {have}); a {kind} slot needs a model "
                             f"whose config lists {kind} under model.adaptors (train or fine-tune one with it)")
        return self.adaptors[kind]

    # ------------------------------------------------------------------ decoder
    def embed_decoder(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """B x T ids at positions start.. -> B x T x d decoder inputs."""
        t = tokens.shape[1]
        if start + t > self.config.max_positions:
            raise ValueError(f"decoder sequence of {start + t} tokens exceeds "
                             f"max_positions={self.config.max_positions}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.embed_tokens(tokens) + self.decoder_positions(pos)[None]
        return self.dropout(self.decoder_embed_norm(x))

    def cross_kv(self, memory: torch.Tensor) -> list[KV]:
        return [layer.cross_kv(memory) for layer in self.decoder_layers]

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               added: torch.Tensor | None = None) -> torch.Tensor:
        """Full (teacher-forced) causal decoder pass -> B x T x d final hidden states. `added` (B x T x d)
        is added to the inputs' embeddings (a frame output's progress queries)."""
        x = self.embed_decoder(tokens)
        if added is not None:
            x = x + added.to(x.dtype)
        mask = memory_mask[:, None, None, :]
        for layer, kv in zip(self.decoder_layers, self.cross_kv(memory)):
            x = self._run_layer(layer, x, kv, mask)
        return self.decoder_norm(x)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied output projection: logits over the unified vocabulary."""
        return self.embed_tokens(hidden, project=True)

    # ------------------------------------------------------------------ training API
    def forward(self, batch: Batch) -> torch.Tensor:
        """-> B x T x V logits for the next token at every decoder position."""
        memory, mask = self.encode(batch)
        return self.output_logits(self.decode(batch.decoder_input, memory, mask))

    def loss(self, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
        """Mean cross-entropy over `loss_mask` tokens, and stats(ntokens, nll_sum, correct).

        The output projection runs only on loss positions: at a 59k vocabulary the B x T x V logits
        are the largest tensor of the step, and most decoder positions may carry no loss (prompt).
        `nll_sum` is without label smoothing, so per-task curves are true perplexities.
        """
        if batch.target is None or batch.loss_mask is None:
            raise ValueError("loss() needs batch.target and batch.loss_mask (a training batch)")
        memory, mask = self.encode(batch)
        hidden = self.decode(batch.decoder_input, memory, mask)
        sel = batch.loss_mask.bool()
        target = batch.target[sel]
        logits = self.output_logits(hidden[sel]).float()
        ntokens = int(target.numel())
        if ntokens == 0:  # keep the graph connected so distributed backward still runs
            return logits.sum() * 0.0 + hidden.sum() * 0.0, dict(ntokens=0, nll_sum=0.0, correct=0)
        loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        with torch.no_grad():
            nll_sum = float(F.cross_entropy(logits, target, reduction="sum"))
            correct = int((logits.argmax(-1) == target).sum())
        if batch.frames is not None:
            # A frame output's placeholders are tokens too (go on / stop); its head's loss per frame is
            # added to theirs, and to `nll_sum`, so that the task's curves and the validation loss that
            # picks the exported weights see the frames, not only where they stop.
            frame_sum, weight = self.frame_loss(batch.decoder_input, memory, mask, batch.frames)
            loss = loss + weight * frame_sum / ntokens
            nll_sum += float(frame_sum.detach())
        return loss, dict(ntokens=ntokens, nll_sum=nll_sum, correct=correct)

    def output_head(self, kind: str) -> nn.Module:
        """The output head of modality `kind`; ValueError naming the heads this model has."""
        if kind not in self.output_heads:
            have = ", ".join(self.output_heads) or "none"
            raise ValueError(f"this model has no {kind} output head (it has: {have}); generating {kind} needs a "
                             f"model whose config lists {kind} under model.output_heads (train or fine-tune one with it)")
        return self.output_heads[kind]

    @staticmethod
    def frame_states(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """B x T x d decoder states -> B x F x d: the states at `index` (B x F positions)."""
        return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))

    def progress_inputs(self, head: nn.Module, shape: torch.Size, index: torch.Tensor, mask: torch.Tensor,
                        progress: torch.Tensor) -> torch.Tensor:
        """B x T x d: the head's progress queries (`head.queries`) at the decoder inputs whose states
        predict frames (`index`), zero elsewhere."""
        queries = head.queries(progress) * mask[..., None].to(progress.dtype)
        added = torch.zeros(shape, dtype=queries.dtype, device=queries.device)
        return added.scatter_add(1, index[..., None].expand(-1, -1, shape[-1]), queries)

    def frame_loss(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                   frames) -> tuple[torch.Tensor, float]:
        """(the head's loss summed over real frames, its weight in the step's loss). The frames come from
        a second decoder pass whose frame-predicting inputs also carry how far through the output they
        are (frame j of n: j / n): where to stop was decided without it (the first pass's tokens), and
        with it a state knows which part of the prompt it is saying, as a duration model would tell it."""
        head = self.output_head(frames.modality)
        shape = (*tokens.shape, self.config.d_model)
        progress = frames.progress if frames.progress is not None else frame_progress(frames.mask)
        added = self.progress_inputs(head, torch.Size(shape), frames.index, frames.mask, progress)
        hidden = self.decode(tokens, memory, memory_mask, added)
        states = self.frame_states(hidden, frames.index)
        return head.loss(states, frames.values, frames.mask, frames.noise, frames.level), head.loss_weight

    @torch.no_grad()
    def output_frames(self, batch: Batch, generated: Sequence[Sequence[int]], modality: str,
                      index: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """B x F x D frames (normalised units) of a frame output: one teacher-forced decoder pass over
        each sample's prefix and `generated` ids, the frame-predicting inputs (`index`, B x F positions
        in that sequence) carrying their progress as in training, gives the states the modality's head
        turns into frames (a diffusion head starting from `noise`)."""
        was_training = self.training
        self.eval()
        try:
            tokens = self._prefixed(batch, generated)
            memory, memory_mask = self.encode(batch)
            index, mask = index.to(tokens.device), mask.to(tokens.device)
            head = self.output_head(modality)
            added = self.progress_inputs(head, torch.Size((*tokens.shape, self.config.d_model)), index, mask,
                                         frame_progress(mask))
            hidden = self.decode(tokens, memory, memory_mask, added)
            states = self.frame_states(hidden, index)
            return head.generate(states, mask, None if noise is None else noise.to(hidden.device))
        finally:
            self.train(was_training)

    def _prefixed(self, batch: Batch, generated: Sequence[Sequence[int]]) -> torch.Tensor:
        """B x L decoder input: each sample's forced prefix then its generated ids (the last one, only a
        target, dropped), padded."""
        pad = self.config.pad_id
        lengths = (batch.decoder_input != pad).sum(1).tolist()
        seqs = [row[:n].tolist() + [int(t) for t in g] for row, n, g in zip(batch.decoder_input, lengths, generated)]
        width = max(1, max(len(s) for s in seqs) - 1)
        tokens = torch.full((len(seqs), width), pad, dtype=torch.long, device=batch.decoder_input.device)
        for i, s in enumerate(seqs):
            tokens[i, : len(s) - 1] = torch.as_tensor(s[:-1], dtype=torch.long)
        return tokens

    # ------------------------------------------------------------------ generation
    def incremental_decoder(self, batch: Batch, beam_size: int = 1) -> CachedDecoder:
        """Run the encoder once and return a KV-cached step decoder with beam_size rows per sample."""
        memory, mask = self.encode(batch)
        return CachedDecoder(self, memory, mask, beam_size)

    @torch.no_grad()
    def search(self, batch: Batch, plans: Sequence[OutputConstraint], beam_size: int = 1,
               max_new_tokens: int | None = None, length_penalty: float = 1.0,
               prune_at: float | None = PRUNE_AT) -> list[Hypothesis]:
        """Like `generate` but returns scored `Hypothesis` objects. `prune_at` is `beam_search`'s (when
        finished samples leave the decoder; None keeps every row to the end): the outputs are the same."""
        if len(plans) != len(batch.decoder_input):
            raise ValueError(f"{len(plans)} plans for a batch of {len(batch.decoder_input)} samples")
        if any(step.kind == "frames" for plan in plans for step in getattr(plan, "steps", ())):
            # A frame output's length is decided greedily: over {go on, stop} every beam is the same path,
            # and a beam would only collect its early stops as finished hypotheses and end there.
            beam_size = 1
        was_training = self.training
        self.eval()  # generation is always inference: no dropout, BatchNorm uses running stats
        try:
            lengths = (batch.decoder_input != self.config.pad_id).sum(1).tolist()
            prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
            caps = []
            for prefix, plan in zip(prefixes, plans):
                cap = plan.max_new_tokens
                if max_new_tokens is not None:
                    cap = min(cap, max_new_tokens)
                # The last generated id is never fed back, so prefix + cap - 1 positions are used.
                caps.append(max(0, min(cap, self.config.max_positions - len(prefix) + 1)))
            decoder = self.incremental_decoder(batch, beam_size)
            return beam_search(decoder, prefixes, plans, beam_size=beam_size, eos_id=self.config.eos_id,
                               max_new_tokens=caps, length_penalty=length_penalty, prune_at=prune_at)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def token_logprobs(self, batch: Batch, generated: Sequence[Sequence[int]]) -> list[list[float]]:
        """Per sample, the model's log-probability of each id of `generated[i]` after its forced prefix
        (`batch.decoder_input`), teacher-forced in one pass: what scores each object of a detection
        (the search keeps only a sequence's total)."""
        was_training = self.training
        self.eval()
        try:
            lengths = (batch.decoder_input != self.config.pad_id).sum(1).tolist()
            prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
            tokens = self._prefixed(batch, generated)
            memory, mask = self.encode(batch)
            logp = F.log_softmax(self.output_logits(self.decode(tokens, memory, mask)).float(), dim=-1)
            out = []
            for i, (p, g) in enumerate(zip(prefixes, generated)):
                if not len(g):
                    out.append([])
                    continue
                pos = torch.arange(len(p) - 1, len(p) - 1 + len(g), device=logp.device)
                ids = torch.as_tensor([int(t) for t in g], dtype=torch.long, device=logp.device)
                out.append(logp[i, pos, ids].tolist())
            return out
        finally:
            self.train(was_training)

    def generate(self, batch: Batch, plans: Sequence[OutputConstraint], beam_size: int = 1,
                 max_new_tokens: int | None = None) -> list[list[int]]:
        """Per sample, the ids generated after its forced prefix (`batch.decoder_input` up to its
        non-pad length), final <eos> excluded, obeying `plans[i]`. beam_size=1 is greedy."""
        return [h.tokens for h in self.search(batch, plans, beam_size, max_new_tokens)]

    @staticmethod
    def num_parameters(config: ModelConfig) -> int:
        """Parameter count of a config, built on the meta device (no memory, no init cost)."""
        with torch.device("meta"):
            model = UniversalModel(config)
        return sum(p.numel() for p in model.parameters())


def frame_progress(mask: torch.Tensor) -> torch.Tensor:
    """B x F frame mask (real frames first) -> B x F float j / n: how far through its n frames frame j is."""
    counts = mask.sum(1, keepdim=True).clamp(min=1)
    return torch.arange(mask.shape[1], device=mask.device)[None].float() / counts


def build_model(config: ModelConfig, seed: int) -> UniversalModel:
    """A freshly initialised model whose weights are a function of (config, seed) only.

    Each part's weights are drawn from the CPU generator seeded for that part (see
    `UniversalModel`) inside `torch.random.fork_rng`, so they do not depend on how much global
    randomness the caller consumed before (two runs with the same params start from the same
    weights), the caller's generator is left exactly as it was, and adding a modality's adaptor
    leaves every other weight as it was. The model is built on the CPU whatever the default device:
    the CPU generator gives the same numbers on every machine, with or without a GPU, and the
    trainer moves the model to its device afterwards. CUDA generators are neither used nor touched.
    """
    with torch.device("cpu"):
        return UniversalModel(config, seed=seed)

