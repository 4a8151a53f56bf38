"""Small batches and configs shared by the model and generation tests."""

import dataclasses

import torch

from ofasys.data.batch import TOKENS, Batch, EncoderSegment
from ofasys.model import ModelConfig

VOCAB = 40


def tiny_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, heads=4,
                ffn_dim=64, dropout=0.1, adaptors={"IMAGE": {"stem_channels": 16, "max_grid": 8}},
                head_scale=True, normformer=True, embed_norm=True)  # every optional module on, so tests cover them
    return ModelConfig(**{**base, **overrides})


def text_segment(lengths: list[int], width: int, gen: torch.Generator) -> EncoderSegment:
    tokens = torch.randint(5, VOCAB, (len(lengths), width), generator=gen)
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    return EncoderSegment(TOKENS, tokens.masked_fill(~mask, 0), mask)


def make_batch(seed: int = 0, batch: int = 3, dec_len: int = 6) -> Batch:
    """[tokens, image, tokens] encoder segments; ragged text lengths; a partial loss mask."""
    gen = torch.Generator().manual_seed(seed)
    first = text_segment([5, 3, 1][:batch] + [4] * max(0, batch - 3), 5, gen)
    image = EncoderSegment("IMAGE", torch.rand(batch, 3, 32, 32, generator=gen))
    last = text_segment([2, 4, 3][:batch] + [1] * max(0, batch - 3), 4, gen)
    seq = torch.randint(5, VOCAB, (batch, dec_len + 1), generator=gen)
    seq[:, 0] = 1  # <bos>
    loss_mask = torch.ones(batch, dec_len, dtype=torch.bool)
    loss_mask[:, :2] = False  # a forced prompt prefix
    loss_mask[0, -1] = False  # and some padding
    return Batch(task="t", keys=[f"k{i}" for i in range(batch)], segments=[first, image, last],
                 decoder_input=seq[:, :-1], target=seq[:, 1:], loss_mask=loss_mask)


def pad_segment(seg: EncoderSegment, extra: int, gen: torch.Generator) -> EncoderSegment:
    """The same segment with `extra` more padding columns holding junk ids (mask False)."""
    junk = torch.randint(0, VOCAB, (seg.tensor.shape[0], extra), generator=gen)
    return EncoderSegment(TOKENS, torch.cat([seg.tensor, junk], 1),
                          torch.cat([seg.mask, torch.zeros_like(junk, dtype=torch.bool)], 1))


def sample_rows(batch: Batch, i: int) -> list[EncoderSegment]:
    """The encoder segments of sample `i` alone (a batch of one)."""
    return [dataclasses.replace(s, tensor=s.tensor[i:i + 1], mask=None if s.mask is None else s.mask[i:i + 1])
            for s in batch.segments]
