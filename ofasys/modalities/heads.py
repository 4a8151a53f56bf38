"""Output heads: what turns the decoder states of a frame output's placeholders into frames.

A frame output (`Modality.frame_output`: MOTION, speech as fbank) is decoded non-autoregressively:
the decoder runs once over one `<mask>` placeholder per frame row, each state conditioned on the
prompt, the encoder and the placeholders before it, and a head maps the B x F x d states to
B x F x D frames, in the units the collator normalised them to (the train split's per-feature mean
and std). Two heads cover the outputs OFASys generates:

- `DiffusionHead` (MOTION, OFASys's `motion_6d`): a denoiser over the whole window, trained to
  recover clean frames from noised ones at a random noise level (x0-prediction, cosine schedule in
  continuous time), sampled by deterministic DDIM in `sampling_steps` steps. Denoising the window
  jointly, with convolutions over frames, keeps a clip coherent where a per-frame regression would
  average every plausible motion into a still pose.
- `RegressionHead` (speech): a linear map per frame refined by a residual convolutional post-net
  (Tacotron 2's), trained with L1 before and after the post-net.

Each head also owns its progress queries (`ProgressQueries`): frame j of n adds the features of j / n
to the decoder input that predicts it, in a second decoder pass (the first, without them, decides
where the output stops), so a state knows how far through the output it is and which part of the
prompt it is saying, as a duration model would tell it, without one.

Both return the loss *summed* over real frames (the model divides by the step's target count, so a
frame weighs as much as a token), and keep padding silent between convolutions so a sample's frames do
not depend on its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

COSINE_OFFSET = 0.008
"""s of the cosine schedule (Nichol & Dhariwal 2021): keeps the noise at level 0 small but non-zero."""
MIN_SIGNAL = 1e-5
"""Floor of the signal share at level 1 (pure noise), so the x0-prediction's division stays finite."""


def signal_share(level: torch.Tensor) -> torch.Tensor:
    """alpha_bar(u) = cos^2(((u + s) / (1 + s)) * pi / 2) for noise levels u in [0, 1]."""
    angle = (level + COSINE_OFFSET) / (1 + COSINE_OFFSET) * (math.pi / 2)
    return torch.cos(angle).pow(2).clamp(min=MIN_SIGNAL, max=1.0)


def level_embedding(level: torch.Tensor, width: int) -> torch.Tensor:
    """B noise levels -> B x width sinusoidal features (of 1000 x level, as DDPM's step embedding)."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    angles = level.float()[:, None] * 1000.0 * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], -1)
    return F.pad(emb, (0, width - 2 * half))


class ProgressQueries(nn.Module):
    """Frame j of n -> a d_model vector added to the decoder input that predicts it: the sinusoidal
    features of j / n through a linear map that starts at zero (a head adds nothing until it learns to)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, progress: torch.Tensor) -> torch.Tensor:
        b, f = progress.shape
        features = level_embedding(progress.reshape(-1), self.proj.in_features).reshape(b, f, -1)
        return self.proj(features.to(self.proj.weight.dtype))


class _ConvBlock(nn.Module):
    """Residual block over frames: LayerNorm, conv, SiLU, conv; padding re-silenced before each conv."""

    def __init__(self, hidden: int, kernel_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.conv1 = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.norm(x) * keep
        h = F.silu(self.conv1(h.transpose(1, 2))).transpose(1, 2) * keep
        return x + self.conv2(h.transpose(1, 2)).transpose(1, 2) * keep


class DiffusionHead(nn.Module):
    """Denoises a window of frames conditioned on the placeholders' states (see module docstring)."""

    def __init__(self, width: int, d_model: int, *, hidden: int, layers: int, kernel_size: int,
                 sampling_steps: int, loss_weight: float):
        super().__init__()
        self.width = width
        self.sampling_steps = sampling_steps
        self.loss_weight = loss_weight
        self.queries = ProgressQueries(d_model)
        self.inp = nn.Linear(width + d_model, hidden)
        self.level = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_ConvBlock(hidden, kernel_size) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, width)
        nn.init.zeros_(self.out.weight)  # the first guess of every clean frame is the mean frame
        nn.init.zeros_(self.out.bias)

    def denoise(self, noisy: torch.Tensor, level: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x F x D noisy frames at B levels -> the predicted clean frames."""
        dtype = self.inp.weight.dtype
        keep = mask[..., None].to(dtype)
        x = self.inp(torch.cat([noisy.to(dtype), states.to(dtype)], -1))
        x = (x + self.level(level_embedding(level, x.shape[-1]).to(dtype))[:, None]) * keep
        for block in self.blocks:
            x = block(x, keep)
        return self.out(self.norm(x)) * keep

    def loss(self, states: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             noise: torch.Tensor | None, level: torch.Tensor | None) -> torch.Tensor:
        """Squared error of the predicted clean frames (mean over features), summed over real frames."""
        if noise is None or level is None:
            raise ValueError("a diffusion head's loss needs the collator's noise and noise levels")
        share = signal_share(level)[:, None, None]
        noisy = share.sqrt() * targets + (1 - share).sqrt() * noise
        predicted = self.denoise(noisy, level, states, mask).float()
        error = (predicted - targets.float()).pow(2).mean(-1)
        return (error * mask).sum()

    @torch.no_grad()
    def generate(self, states: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Deterministic DDIM from `noise` (B x F x D) over `sampling_steps` evenly spaced levels."""
        if noise is None:
            raise ValueError("a diffusion head samples from noise; pass the per-sample draws")
        x = noise.float()
        b = x.shape[0]
        clean = x
        for k in range(self.sampling_steps, 0, -1):
            level = torch.full((b,), k / self.sampling_steps, device=x.device)
            prev = torch.full((b,), (k - 1) / self.sampling_steps, device=x.device)
            share, share_prev = signal_share(level)[:, None, None], signal_share(prev)[:, None, None]
            clean = self.denoise(x, level, states, mask).float()
            eps = (x - share.sqrt() * clean) / (1 - share).sqrt()
            x = share_prev.sqrt() * clean + (1 - share_prev).sqrt() * eps
        return clean * mask[..., None]


class RegressionHead(nn.Module):
    """Frames by a linear map per state, refined by a residual convolutional post-net."""

    def __init__(self, width: int, d_model: int, *, hidden: int, postnet_layers: int, kernel_size: int,
                 loss_weight: float):
        super().__init__()
        self.width = width
        self.loss_weight = loss_weight
        self.queries = ProgressQueries(d_model)
        self.proj = nn.Linear(d_model, width)
        sizes = [width] + [hidden] * (postnet_layers - 1) + [width]
        self.postnet = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
                                     for a, b in zip(sizes[:-1], sizes[1:]))

    def _frames(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = mask[..., None].to(self.proj.weight.dtype)
        coarse = self.proj(states.to(self.proj.weight.dtype)) * keep
        x = coarse.transpose(1, 2)
        for i, conv in enumerate(self.postnet):
            x = conv(x * keep.transpose(1, 2))
            if i < len(self.postnet) - 1:
                x = torch.tanh(x)
        return coarse, (coarse + x.transpose(1, 2)) * keep

    def loss(self, states: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             noise: torch.Tensor | None = None, level: torch.Tensor | None = None) -> torch.Tensor:
        """L1 before and after the post-net (mean over features), summed over real frames."""
        coarse, fine = self._frames(states, mask)
        error = (coarse.float() - targets).abs().mean(-1) + (fine.float() - targets).abs().mean(-1)
        return (error * mask).sum()

    @torch.no_grad()
    def generate(self, states: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self._frames(states, mask)[1].float()
