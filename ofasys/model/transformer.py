"""Pre-norm Transformer layers with NormFormer's extra norms, and a decoder KV cache.

Pre-norm (LayerNorm before each sub-block) is stable where post-norm needs careful warmup; NormFormer
(Shleifer et al. 2021) adds a LayerNorm after attention and one inside the FFN, and optionally a
learned scale per head, which counters the growth of the residual stream that pre-norm allows.
Attention uses `F.scaled_dot_product_attention`, so the fused kernels are used where they exist and
everything stays dtype-agnostic (fp32 on CPU, bf16 on GPU).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

KV = tuple[torch.Tensor, torch.Tensor]
"""Keys and values, each B x heads x S x head_dim."""


class SharedMemory(NamedTuple):
    """One layer's cross-attention memory when each sample has several query rows (its beams), one
    position each: ONE copy per sample, which the rows of a sample all attend to at once (the rows
    become the query length of an ordinary attention), instead of a copy of keys, values and mask per
    row. Built once per generation by `Attention.shared_memory`."""

    keys: torch.Tensor
    """samples x heads x head_dim x S: the keys, transposed for `q @ k` and already scaled by
    1/sqrt(head_dim), so a step does neither."""
    values: torch.Tensor
    """samples x heads x S x head_dim (zero for a sample without any real slot, see `memory_bias`)."""
    bias: torch.Tensor
    """samples x 1 x 1 x S, added to the scores: 0 = attend, -inf = padding (`memory_bias`)."""


def memory_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B x S bool memory mask (True = real) -> B x 1 x 1 x S additive bias, 0 or -inf. A sample with no
    real slot gets 0 everywhere (finite scores) and zeroed values in `shared_memory`: attention then
    returns zeros for it, which is what `F.scaled_dot_product_attention` gives a fully masked row."""
    real = mask.bool()
    bias = torch.zeros(real.shape, dtype=dtype, device=mask.device).masked_fill(~real, float("-inf"))
    bias = bias.masked_fill(~real.any(1, keepdim=True), 0.0)
    return bias[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention whose key/value projection is separate from the query side.

    Splitting `project_kv` from `forward` is what makes caching simple: cross-attention projects the
    encoder output once per generation, self-attention appends one step's keys/values to a cache.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.heads = config.heads
        self.q_proj = nn.Linear(d, d)
        self.kv_proj = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(d, d)
        self.out_proj.is_residual_out = True  # init hint, see UniversalModel._init_weights
        self.dropout = config.attention_dropout
        self.head_scale = nn.Parameter(torch.ones(config.heads)) if config.head_scale else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def project_kv(self, source: torch.Tensor) -> KV:
        k, v = self.kv_proj(source).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def shared_memory(self, source: torch.Tensor, mask: torch.Tensor) -> SharedMemory:
        """`SharedMemory` of encoder output `source` (B x S x d) and its B x S mask (True = real)."""
        k, v = self.project_kv(source)
        # Both laid out as the step's matmuls read them (a strided operand would be copied every step).
        keys = torch.empty(k.transpose(-1, -2).shape, dtype=k.dtype, device=k.device)
        torch.mul(k.transpose(-1, -2), 1.0 / math.sqrt(k.shape[-1]), out=keys)
        seen = mask.bool().any(1)  # B: has a real slot
        values = v.contiguous() if bool(seen.all()) else (v * seen[:, None, None, None].to(v.dtype)).contiguous()
        return SharedMemory(keys, values, memory_bias(mask, k.dtype))

    def _attend_shared(self, x: torch.Tensor, memory: SharedMemory) -> torch.Tensor:
        """x: (samples x g) x 1 x d, sample i's g rows consecutive -> the same shape.

        Two matmuls rather than `F.scaled_dot_product_attention`: on CPU at the demo's caption shapes
        (64 samples x 4 heads, 3 beams as the query length, 78 slots of 32 dims) the matmuls, additive
        bias and softmax take 0.5 ms where SDPA takes 0.7 ms, and SDPA over a copy per row 1.9 ms
        (`bench/step_attention.py`; for the self-attention's few cached positions SDPA is the faster).
        Keys stored as `q @ k` reads them, pre-scaled, save a copy and a multiply every step."""
        n, t, d = x.shape
        b = memory.values.shape[0]
        q = self.q_proj(x).view(b, n // b * t, self.heads, d // self.heads).transpose(1, 2)  # b x H x g x hd
        scores = torch.matmul(q, memory.keys) + memory.bias
        y = torch.matmul(scores.softmax(-1), memory.values)  # b x H x g x hd
        if self.head_scale is not None:
            y = y * self.head_scale.view(1, -1, 1, 1).to(y.dtype)
        return self.out_proj(y.transpose(1, 2).reshape(n, t, d))

    def forward(self, x: torch.Tensor, kv: KV | SharedMemory, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: B x T x d queries; mask: bool, broadcastable to B x heads x T x S, True = attend.
        With a `SharedMemory` (whose bias is the mask), x holds one position of each row of its samples."""
        if isinstance(kv, SharedMemory):
            return self._attend_shared(x, kv)
        q = self._split(self.q_proj(x))
        y = F.scaled_dot_product_attention(
            q, kv[0], kv[1], attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # B x H x T x hd
        if self.head_scale is not None:
            y = y * self.head_scale.view(1, -1, 1, 1).to(y.dtype)
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """fc1 -> GELU -> (NormFormer mid LayerNorm) -> dropout -> fc2."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim)
        self.mid_norm = nn.LayerNorm(config.ffn_dim) if config.normformer else nn.Identity()
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model)
        self.fc2.is_residual_out = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.mid_norm(F.gelu(self.fc1(x)))))


class AttentionBlock(nn.Module):
    """x + dropout(post_norm(attention(norm(x)))): pre-norm with NormFormer's post-attention LN.

    Self-attention derives keys/values from its own normed input (appending them to `cache` when
    decoding step by step); cross-attention is handed the encoder's precomputed `kv`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.post_norm = nn.LayerNorm(config.d_model) if config.normformer else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv: KV | SharedMemory | None = None, mask: torch.Tensor | None = None,
                causal: bool = False, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.norm(x)
        if kv is None:
            k, v = self.attn.project_kv(h)
            if cache is not None:  # incremental decoding: one new step per row, append to the cache
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            kv = (k, v)
        return x + self.dropout(self.post_norm(self.attn(h, kv, mask, causal)))


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = AttentionBlock(config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask: B x 1 x 1 x S bool key-padding mask (True = real token)."""
        x = self.self_attn(x, mask=mask)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, FFN; each a pre-norm residual block."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = AttentionBlock(config)
        self.cross_attn = AttentionBlock(config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def cross_kv(self, memory: torch.Tensor) -> KV:
        """Keys/values of the encoder output; computed once per generation and reused every step."""
        return self.cross_attn.attn.project_kv(memory)

    def shared_memory(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> SharedMemory:
        """The encoder output (B x S x d, B x S mask) as `SharedMemory`: one copy per sample, for
        step-wise beam decoding."""
        return self.cross_attn.attn.shared_memory(memory, memory_mask)

    def forward(self, x: torch.Tensor, cross_kv: KV | SharedMemory, memory_mask: torch.Tensor | None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Full causal pass when `cache` is None. With a cache, x holds one new step per row, which
        attends to every cached step (so no causal mask), and the cache (a dict with "k"/"v") is
        updated in place. With a `SharedMemory` as `cross_kv` (its bias is the mask: `memory_mask` is
        unused), x's rows are its samples' rows, consecutive per sample."""
        x = self.self_attn(x, causal=cache is None, cache=cache)
        x = self.cross_attn(x, kv=cross_kv, mask=memory_mask)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))
