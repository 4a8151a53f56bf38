"""The universal encoder-decoder: every task is "segments in, tokens out".

Encoder: each `EncoderSegment` of a `Batch` becomes a run of vectors (token segments through the
shared embedding, image segments through the image adaptor), the runs are concatenated in order and
get a learned segment-type embedding (so the model knows image from text) plus 1-D positions.
Decoder: causal self-attention over output tokens plus cross-attention to the encoder. The token
embedding is shared by encoder, decoder and the output projection (tied), because text, bins, codes
and phones all live in one unified vocabulary.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ofasys.data.batch import Batch
from ofasys.generation.beam import Hypothesis, OutputConstraint, beam_search

from .adaptors import ImageAdaptor
from .config import ModelConfig
from .transformer import KV, DecoderLayer, EncoderLayer

SEGMENT_TYPES = {"tokens": 0, "image": 1}
"""Segment kind -> row of the segment-type embedding."""
INIT_SEED_TAG = 0x494E4954  # "INIT": mixed into the run seed for the initial weights' stream


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
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_tokens = SharedEmbedding(config.vocab_size, d)
        self.image_adaptor = ImageAdaptor(config)
        self.segment_type = nn.Embedding(len(SEGMENT_TYPES), d)
        self.encoder_positions = nn.Embedding(config.max_positions, d)
        self.encoder_embed_norm = nn.LayerNorm(d) if config.embed_norm else nn.Identity()
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder_positions = nn.Embedding(config.max_positions, d)
        self.decoder_embed_norm = nn.LayerNorm(d) if config.embed_norm else nn.Identity()
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 style: N(0, init_std) everywhere, residual output projections scaled down by
        sqrt(2 x layers) so that the sum of many residual branches starts at a sane scale. (Not a
        zero init: NormFormer's post-attention LayerNorm of an all-zero branch has huge gradients.)
        The image stem keeps its own (kaiming / BatchNorm) init."""
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
        parts, masks, types = [], [], []
        for seg in batch.segments:
            if seg.kind == "tokens":
                x = self.embed_tokens(seg.tokens)
                mask = seg.mask.bool()
            elif seg.kind == "image":
                x = self.image_adaptor(seg.images)
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            else:
                raise ValueError(f"unknown segment kind {seg.kind!r}")
            parts.append(x)
            masks.append(mask)
            types.append(torch.full(x.shape[:2], SEGMENT_TYPES[seg.kind], device=x.device))
        if not parts:
            raise ValueError("a batch needs at least one encoder segment")
        x, mask, types = torch.cat(parts, 1), torch.cat(masks, 1), torch.cat(types, 1)
        # Positions count real tokens only, so padding inside an earlier segment does not shift the
        # positions of later ones: a sample means the same thing however its batch was padded.
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        if int(pos.max()) >= self.config.max_positions:
            raise ValueError(f"encoder sequence of {int(pos.max()) + 1} tokens exceeds "
                             f"max_positions={self.config.max_positions}")
        x = x + self.segment_type(types) + self.encoder_positions(pos)
        x = self.dropout(self.encoder_embed_norm(x))
        # A sample with no real token at all would give NaN attention rows; let it see its first slot.
        attn_mask = mask.clone()
        attn_mask[:, 0] |= ~mask.any(1)
        attn_mask = attn_mask[:, None, None, :]
        for layer in self.encoder_layers:
            x = layer(x, attn_mask)
        return self.encoder_norm(x), mask

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

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """Full (teacher-forced) causal decoder pass -> B x T x d final hidden states."""
        x = self.embed_decoder(tokens)
        mask = memory_mask[:, None, None, :]
        for layer, kv in zip(self.decoder_layers, self.cross_kv(memory)):
            x = layer(x, kv, mask)
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
        return loss, dict(ntokens=ntokens, nll_sum=nll_sum, correct=correct)

    # ------------------------------------------------------------------ generation
    def incremental_decoder(self, batch: Batch, beam_size: int = 1) -> "CachedDecoder":
        """Run the encoder once and return a KV-cached step decoder with beam_size rows per sample."""
        memory, mask = self.encode(batch)
        return CachedDecoder(self, memory, mask, beam_size)

    @torch.no_grad()
    def search(self, batch: Batch, plans: Sequence[OutputConstraint], beam_size: int = 1,
               max_new_tokens: int | None = None, length_penalty: float = 1.0) -> list[Hypothesis]:
        """Like `generate` but returns scored `Hypothesis` objects."""
        if len(plans) != len(batch.decoder_input):
            raise ValueError(f"{len(plans)} plans for a batch of {len(batch.decoder_input)} samples")
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
                               max_new_tokens=caps, length_penalty=length_penalty)
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


def build_model(config: ModelConfig, seed: int) -> UniversalModel:
    """A freshly initialised model whose weights are a function of (config, seed) only.

    The weights are drawn from the CPU generator seeded with `derive_seed(seed, INIT_SEED_TAG)`
    inside `torch.random.fork_rng`, so they do not depend on how much global randomness the caller
    consumed before (two runs with the same params start from the same weights), and the caller's
    generator is left exactly as it was. The model is built on the CPU whatever the default device:
    the CPU generator gives the same numbers on every machine, with or without a GPU, and the
    trainer moves the model to its device afterwards. CUDA generators are neither used nor touched.
    """
    from ofasys.training.seeding import derive_seed

    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(derive_seed(seed, INIT_SEED_TAG))
        return UniversalModel(config)


class CachedDecoder:
    """KV-cached step decoder (implements generation's `StepDecoder`).

    Cross-attention keys/values are projected once per layer from the encoder output; each step
    appends one position's self-attention keys/values per layer. Rows are samples x beams
    (row = sample * beam_size + beam), so the encoder output is simply repeated per beam.
    """

    def __init__(self, model: UniversalModel, memory: torch.Tensor, memory_mask: torch.Tensor,
                 beam_size: int):
        self.model = model
        self.memory_mask = memory_mask.repeat_interleave(beam_size, dim=0)[:, None, None, :]
        # Project per sample, then repeat per beam: beams of one sample share the encoder output.
        self.cross = [(k.repeat_interleave(beam_size, dim=0), v.repeat_interleave(beam_size, dim=0))
                      for k, v in model.cross_kv(memory)]
        self.caches: list[dict[str, torch.Tensor]] = [{} for _ in model.decoder_layers]
        self.position = 0

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.memory_mask.device)[:, None]
        x = self.model.embed_decoder(tokens, start=self.position)
        for layer, kv, cache in zip(self.model.decoder_layers, self.cross, self.caches):
            x = layer(x, kv, self.memory_mask, cache=cache)
        self.position += 1
        return self.model.output_logits(self.model.decoder_norm(x))[:, 0]

    def reorder(self, index: torch.Tensor) -> None:
        # Beams never leave their sample, so the (per-sample) cross-attention K/V need no reorder.
        if torch.equal(index, torch.arange(len(index), device=index.device)):  # greedy, or beams kept in place
            return
        index = index.to(self.memory_mask.device)
        for cache in self.caches:
            for name in cache:
                cache[name] = cache[name].index_select(0, index)
