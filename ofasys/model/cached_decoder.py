"""The universal model's KV-cached step decoder: what generation drives one position at a time."""

from __future__ import annotations

import torch

from .transformer import SharedMemory


class CachedDecoder:
    """KV-cached step decoder (implements generation's `StepDecoder` and `PrunableDecoder`).

    Rows are samples x beams (row = sample * beam_size + beam). Each step appends one position's
    self-attention keys/values per layer and per row. Cross-attention keys/values are projected once
    per layer from the encoder output and kept ONCE per sample (`SharedMemory`): a step's queries of
    a sample's beams attend to them together, as the query length of one attention, so beams neither
    copy the encoder's keys and values nor read them once each.

    Until a sample's beams are first fed different tokens (its forced prefix, and the first free
    step, when only one beam is alive), every beam of every sample holds the same state: while that
    is so ("tied"), a step computes one row per sample and hands each beam a copy of its logits; the
    caches get a row per beam at the first step whose tokens differ within a sample.

    `model` is a `UniversalModel` (its decoder layers, `embed_decoder`, `decoder_norm` and
    `output_logits`); it is not imported here, since the model makes its decoders from this class.
    """

    def __init__(self, model: torch.nn.Module, memory: torch.Tensor, memory_mask: torch.Tensor,
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
        self.tied = beam_size > 1
        """The caches hold one row per sample (all its beams are the same so far), not one per beam."""

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        k = self.beam_size
        if self.tied:
            per_sample = tokens.view(-1, k)
            if bool((per_sample == per_sample[:, :1]).all()):
                return self._step(per_sample[:, 0]).repeat_interleave(k, dim=0)
            for cache in self.caches:  # beams part: each gets its own copy of the sample's cache
                for name in cache:
                    cache[name] = cache[name].repeat_interleave(k, dim=0)
            self.tied = False
        return self._step(tokens)

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        """One position of every cache row -> its next-token logits."""
        tokens = tokens.to(self.device)[:, None]
        x = self.model.embed_decoder(tokens, start=self.position)
        for layer, memory, cache in zip(self.model.decoder_layers, self.cross, self.caches):
            x = layer(x, memory, None, cache=cache)
        self.position += 1
        return self.model.output_logits(self.model.decoder_norm(x))[:, 0]

    def reorder(self, index: torch.Tensor) -> None:
        """Row r continues from row index[r], within r's sample: only the self-attention caches move
        (a sample's cross-attention memory is the same for all its beams), and none while tied."""
        if self.tied or torch.equal(index, torch.arange(len(index), device=index.device)):  # greedy, or beams kept in place
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
        rows = samples if self.tied else rows.to(self.device)
        for cache in self.caches:
            for name in cache:
                cache[name] = cache[name].index_select(0, rows)
