"""What the generation path's two speed-ups buy, each measured side by side on the same samples.

(a) KV-cached vs uncached beam search: the model's `CachedDecoder` appends one position's keys and
values per step; the uncached decoder below reruns the whole decoder over every prefix at every step
(what a search without a cache does). Same search, same constraints: the outputs must be identical.
(b) batched vs one-at-a-time inference: the same samples generated in batches of `BATCH` and one by
one. Same outputs again.

Run after `dvc repro` of the demo (it reads the exported model and a task's test shards):

    .venv/bin/python bench/search.py [task]      # default: caption
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from ofasys.data.task_data import ShardTaskData
from ofasys.generation.beam import beam_search
from ofasys.inference import OFASys

TASK = sys.argv[1] if len(sys.argv) > 1 else "caption"
SAMPLES, BATCH, BEAM = 64, 64, 3


class UncachedDecoder:
    """A `StepDecoder` without a cache: every step decodes the whole prefix again."""

    def __init__(self, model, memory: torch.Tensor, memory_mask: torch.Tensor, beam_size: int):
        self.model = model
        self.memory = memory.repeat_interleave(beam_size, dim=0)
        self.memory_mask = memory_mask.repeat_interleave(beam_size, dim=0)
        self.history = torch.zeros((self.memory.shape[0], 0), dtype=torch.long)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.history = torch.cat([self.history, tokens[:, None]], 1)
        hidden = self.model.decode(self.history, self.memory, self.memory_mask)
        return self.model.output_logits(hidden[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        self.history = self.history.index_select(0, index)


def search(model, batch, plans, cached: bool) -> list[list[int]]:
    """The model's own beam search (`UniversalModel.search`) with the cached or the uncached decoder."""
    if cached:
        return model.generate(batch, plans, beam_size=BEAM)
    with torch.no_grad():
        memory, mask = model.encode(batch)
        lengths = (batch.decoder_input != model.config.pad_id).sum(1).tolist()
        prefixes = [row[:n].tolist() for row, n in zip(batch.decoder_input, lengths)]
        caps = [p.max_new_tokens for p in plans]
        found = beam_search(UncachedDecoder(model, memory, mask, BEAM), prefixes, plans, beam_size=BEAM,
                            eos_id=model.config.eos_id, max_new_tokens=caps)
    return [h.tokens for h in found]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    pretrained = OFASys.from_pretrained("checkpoints/final")
    model = pretrained.model.eval()
    data = ShardTaskData(Path("data/shards") / TASK / "manifest.json", "test", pretrained.vocab)
    samples = [data.get(i) for i in range(min(SAMPLES, len(data)))]
    batch = data.collate_for_generation(samples)
    plans = [data.plan(s) for s in samples]

    search(model, batch, plans, cached=True)  # warm-up: first-call allocations are not the search's
    cached, t_cached = timed(lambda: search(model, batch, plans, cached=True))
    uncached, t_uncached = timed(lambda: search(model, batch, plans, cached=False))
    if cached != uncached:
        raise SystemExit("cached and uncached beam search disagree; the cache is wrong")
    print(f"{TASK}: KV-cached vs uncached beam search (beam {BEAM}, {len(samples)} samples, same outputs): "
          f"{t_uncached / t_cached:.1f}x faster ({t_cached:.2f} s vs {t_uncached:.2f} s); goal >= 3x")

    def one_at_a_time():
        return [model.generate(data.collate_for_generation([s]), [data.plan(s)], beam_size=BEAM)[0] for s in samples]

    def batched():
        out = []
        for start in range(0, len(samples), BATCH):
            chunk = samples[start : start + BATCH]
            out += model.generate(data.collate_for_generation(chunk), [data.plan(s) for s in chunk], beam_size=BEAM)
        return out

    together, t_batched = timed(batched)
    alone, t_alone = timed(one_at_a_time)
    if together != alone:
        raise SystemExit("batched and one-at-a-time generation disagree; padding leaks into a sample")
    print(f"{TASK}: batched ({BATCH}) vs one-at-a-time inference ({len(samples)} samples, same outputs): "
          f"{t_alone / t_batched:.1f}x faster ({t_batched:.2f} s vs {t_alone:.2f} s); goal >= 8x")


if __name__ == "__main__":
    main()
