"""The universal model's KV-cached step decoder: what generation drives one position at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .universal import UniversalModel


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

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows`, in this order (generation's `PrunableDecoder`): the search drops finished
        samples, so later steps attend, project and normalise live rows only. Self-attention caches,
        cross-attention K/V and the memory mask all follow; the memory's padded width stays as it is,
        so a kept row's arithmetic is unchanged."""
        rows = rows.to(self.memory_mask.device)
        self.memory_mask = self.memory_mask.index_select(0, rows)
        self.cross = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross]
        for cache in self.caches:
            for name in cache:
                cache[name] = cache[name].index_select(0, rows)
