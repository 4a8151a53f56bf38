"""Small stand-ins for the task data and the model, coded against the trainer's Protocols.

FakeTaskData yields synthetic token batches ("copy the digits" style: the decoder must reproduce
the encoder tokens) with per-sample lengths, so the sampler's bucketing and the trainer's loop run
without shards. FakeModel is a tiny encoder-decoder-shaped nn.Module with dropout (to exercise the
per-step seeding) and a `loss(batch, label_smoothing)` returning the same stats as UniversalModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ofasys.data.batch import Batch, EncoderSegment

VOCAB = 40


@dataclass
class FakeSample:
    key: str
    meta: dict
    arrays: dict


class FakeTaskData:
    """`n` samples with lengths in [min_len, max_len]; sample i's tokens depend on (name, i) only."""

    def __init__(self, name: str, n: int, min_len: int = 2, max_len: int = 24, seed: int = 0,
                 mask_prob: float = 0.15) -> None:
        self.name = name
        self.n = n
        rng = np.random.default_rng([seed, n, len(name)])
        self.lengths = rng.integers(min_len, max_len + 1, size=n).astype(np.int32)
        self.mask_prob = mask_prob
        self.manifest = {
            "task": name, "instruction": f"[TEXT:src] -> [TEXT:tgt] ({name})", "image_size": None,
            "slots": [{"column": "src", "modality": "TEXT"}], "closed_sets": {},
            "assets": {"vocab": None},
        }
        self.gets = 0

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> FakeSample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.gets += 1
        rng = np.random.default_rng([i, self.n, sum(map(ord, self.name))])
        tokens = rng.integers(5, VOCAB, size=int(self.lengths[i])).astype(np.int64)
        return FakeSample(key=f"train-{i:09d}", meta={"task": self.name, "row": i}, arrays={"src": tokens})

    def collate(self, samples: list[FakeSample], rng: np.random.Generator, train: bool, epoch: int | None = None) -> Batch:
        b = len(samples)
        length = max(len(s.arrays["src"]) for s in samples)
        enc = torch.zeros(b, length, dtype=torch.long)
        dec_in = torch.zeros(b, length + 1, dtype=torch.long)
        target = torch.zeros(b, length + 1, dtype=torch.long)
        for j, s in enumerate(samples):
            src = torch.from_numpy(s.arrays["src"])
            shown = src.clone()
            if train and self.mask_prob:  # stream-time randomness, like mask_ratio
                hide = torch.from_numpy(rng.random(len(src)) < self.mask_prob)
                shown[hide] = 4
            enc[j, : len(src)] = shown
            dec_in[j, 0] = 1
            dec_in[j, 1 : len(src) + 1] = src
            target[j, : len(src)] = src
            target[j, len(src)] = 2
        loss_mask = target != 0
        return Batch(task=self.name, keys=[s.key for s in samples],
                     segments=[EncoderSegment("tokens", enc, enc != 0)],
                     decoder_input=dec_in, target=target, loss_mask=loss_mask,
                     meta=[s.meta for s in samples])


class FakeModel(nn.Module):
    """Embeddings + a GRU-free mixer: decoder position t sees its input token and the mean encoder."""

    def __init__(self, d: int = 16, dropout: float = 0.1, seed: int = 0, tie: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, d)
        self.mix = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, VOCAB, bias=False)
        if tie:
            self.out.weight = self.embed.weight
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, batch: Batch) -> torch.Tensor:
        seg = batch.segments[0]
        m = seg.mask.float().unsqueeze(-1)
        enc = (self.embed(seg.tensor) * m).sum(1) / m.sum(1).clamp(min=1)
        dec = self.embed(batch.decoder_input)
        h = torch.cat([dec, enc[:, None].expand_as(dec)], -1)
        h = self.norm(torch.tanh(self.mix(self.dropout(h))))
        return self.out(h)

    def loss(self, batch: Batch, label_smoothing: float = 0.0):
        logits = self(batch)
        sel = batch.loss_mask.bool()
        target = batch.target[sel]
        lg = logits[sel].float()
        loss = F.cross_entropy(lg, target, label_smoothing=label_smoothing)
        with torch.no_grad():
            nll_sum = float(F.cross_entropy(lg, target, reduction="sum"))
            correct = int((lg.argmax(-1) == target).sum())
        return loss, dict(ntokens=int(target.numel()), nll_sum=nll_sum, correct=correct)


class CollateHookTask:
    """Wraps a task; `on_collate(n)` runs before the n-th collate (1-based) of the counter it shares
    with the other wrapped tasks, so a test can act at a chosen point of a real training run."""

    def __init__(self, task: FakeTaskData, counter: dict) -> None:
        self.task, self.counter = task, counter
        self.name, self.lengths, self.manifest = task.name, task.lengths, task.manifest

    def __len__(self) -> int:
        return len(self.task)

    def get(self, i):
        return self.task.get(i)

    def on_collate(self, n: int) -> None:
        pass

    def collate(self, samples, rng, train, epoch=None):
        self.counter["n"] += 1
        self.on_collate(self.counter["n"])
        return self.task.collate(samples, rng, train)


def make_tasks(sizes: dict[str, int] | None = None) -> list[FakeTaskData]:
    sizes = sizes or {"caption": 300, "grounding": 200, "vqa": 97, "infill": 150}
    return [FakeTaskData(name, n, seed=k) for k, (name, n) in enumerate(sizes.items())]


def make_vocab(path) -> str:
    """A tiny real UnifiedVocab file (for the export); returns its fingerprint."""
    from ofasys.text_tokenizer import train_text_tokenizer
    from ofasys.vocab import UnifiedVocab

    tok = train_text_tokenizer(["one two three four five six seven eight nine zero"] * 20, vocab_size=300)
    vocab = UnifiedVocab.build(tok, num_bins=8)
    vocab.save(path)
    return vocab.fingerprint
