"""The universal model's KV-cached step decoder: what generation drives one position at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .transformer import SharedMemory

if TYPE_CHECKING:
    from .universal import UniversalModel


class CachedDecoder:
    """KV-cached step decoder (implements generation's `StepDecoder` and `PrunableDecoder`).

    Rows are samples x beams (row = sample * beam_size + beam). Each step appends one position's
    self-attention keys/values per layer and per row. Cross-attention keys/values are projected once
    per layer from the encoder output and kept ONCE per sample (`SharedMemory`): a step's queries of
    a sample's beams attend to them together, as the query length of one attention, so beams neither
    copy the encoder's keys and values nor read them once each.
    """

    def __init__(self, model: UniversalModel, memory: torch.Tensor, memory_mask: torch.Tensor,
                 beam_size: int):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.model = model
        self.beam_size = beam_size
        self.device = memory.device
        with torch.no_grad():  # inference only, like `step`
            self.cross: list[SharedMemory] = [layer.shared_memory(memory, memory_mask)
                                              for layer in model.decoder_layers]
        self.caches: list[dict[str, torch.Tensor]] = [{} for _ in model.decoder_layers]
        self.position = 0

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)[:, None]
        x = self.model.embed_decoder(tokens, start=self.position)
        for layer, memory, cache in zip(self.model.decoder_layers, self.cross, self.caches):
            x = layer(x, memory, None, cache=cache)
        self.position += 1
        return self.model.output_logits(self.model.decoder_norm(x))[:, 0]

    def reorder(self, index: torch.Tensor) -> None:
        """Row r continues from row index[r], within r's sample: only the self-attention caches move
        (a sample's cross-attention memory is the same for all its beams)."""
        if torch.equal(index, torch.arange(len(index), device=index.device)):  # greedy, or beams kept in place
            return
        index = index.to(self.device)
        for cache in self.caches:
            for name in cache:
                cache[name] = cache[name].index_select(0, index)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows`, in this order (generation's `PrunableDecoder`): the search drops finished
        samples, so later steps attend, project and normalise live rows only. `rows` come in whole
        samples, beam_size consecutive rows from one sample each (beams reordered within it, as by
        `reorder`); ValueError otherwise. Self-attention caches follow the rows, the cross-attention
        memory the kept samples; its padded width stays as it is, so a kept row's arithmetic is unchanged."""
        k = self.beam_size
        groups = rows.view(-1, k) // k if len(rows) % k == 0 else None
        if groups is None or not bool((groups == groups[:, :1]).all()):
            raise ValueError(f"select needs whole samples: {k} rows of one sample each, got rows {rows.tolist()}")
        samples = groups[:, 0].to(self.device)
        self.cross = [SharedMemory(m.keys.index_select(0, samples), m.values.index_select(0, samples),
                                   m.bias.index_select(0, samples)) for m in self.cross]
        rows = rows.to(self.device)
        for cache in self.caches:
            for name in cache:
                cache[name] = cache[name].index_select(0, rows)
