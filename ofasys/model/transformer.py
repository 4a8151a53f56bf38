"""Pre-norm Transformer layers with NormFormer's extra norms, and a decoder KV cache.

Pre-norm (LayerNorm before each sub-block) is stable where post-norm needs careful warmup; NormFormer
(Shleifer et al. 2021) adds a LayerNorm after attention and one inside the FFN, and optionally a
learned scale per head, which counters the growth of the residual stream that pre-norm allows.
Attention uses `F.scaled_dot_product_attention`, so the fused kernels are used where they exist and
everything stays dtype-agnostic (fp32 on CPU, bf16 on GPU).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

KV = tuple[torch.Tensor, torch.Tensor]
"""Keys and values, each B x heads x S x head_dim."""


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

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: B x T x d queries; mask: bool, broadcastable to B x heads x T x S, True = attend."""
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

    def forward(self, x: torch.Tensor, kv: KV | None = None, mask: torch.Tensor | None = None,
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

    def forward(self, x: torch.Tensor, cross_kv: KV, memory_mask: torch.Tensor,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Full causal pass when `cache` is None. With a cache, x holds one new step per row, which
        attends to every cached step (so no causal mask), and the cache (a dict with "k"/"v") is
        updated in place."""
        x = self.self_attn(x, causal=cache is None, cache=cache)
        x = self.cross_attn(x, kv=cross_kv, mask=memory_mask)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))
