"""Image adaptor: pixels -> a grid of d_model-wide tokens with 2-D positions.

The encoder only ever sees token vectors; the adaptor is what turns a B x 3 x H x W image into
B x (h*w) x d_model tokens that sit beside text tokens in one sequence. 2-D positions are added here
(not by the encoder) because only the adaptor knows the grid shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import ModelConfig

# Images arrive as floats in [0, 1] (contracts: "normalised by the model itself"); ImageNet
# statistics are what ResNet-style stems expect and are harmless for the small conv stem.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_stem(out_channels: int) -> nn.Sequential:
    """Three stride-2 3x3 convs, then one stride-1 3x3 conv, each with BatchNorm and ReLU.

    Stride 8, so a 64 px image gives 8x8 = 64 tokens. The last, stride-1 conv doubles the receptive
    field (15 -> 31 px) so one token can see a whole 24-32 px digit: with it, captioning reached the
    same teacher-forced accuracy in half the steps (.97 at 200 vs 400 steps, single-task runs here),
    for about one more conv at the coarsest resolution. BatchNorm is there on purpose: without it
    the tiny CPU model did not learn captioning or grounding in the calibration runs (SETUP.md).
    """
    c1, c2 = max(out_channels // 4, 8), max(out_channels // 2, 8)
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, c1, 2), (c1, c2, 2), (c2, out_channels, 2), (out_channels, out_channels, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def resnet_stem(name: str) -> tuple[nn.Sequential, int]:
    """OFA's image trunk: a torchvision ResNet up to layer3 (stride 16, 1024 channels), untrained.

    No pretrained weights ship offline (SETUP.md), so the trunk is randomly initialised; its value
    is architectural parity with OFA at the large sizes.
    """
    import torchvision  # imported lazily: the tiny CPU model does not need it

    net = getattr(torchvision.models, name)(weights=None)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    return trunk, net.layer3[-1].conv3.out_channels


def sinusoidal_2d(rows: int, cols: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed (rows*cols) x dim positions: first half encodes the row, second half the column."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, half, 2, device=device).float() / half)

    def encode(n: int) -> torch.Tensor:
        angles = torch.arange(n, device=device).float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # n x half

    r, c = encode(rows), encode(cols)
    pos = torch.cat([r[:, None].expand(rows, cols, half), c[None].expand(rows, cols, half)], dim=-1)
    return pos.reshape(rows * cols, dim).to(dtype)


class ImageAdaptor(nn.Module):
    """B x 3 x H x W in [0, 1] -> B x (h*w) x d_model, row-major grid order, 2-D positions added."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.image_stem == "conv":
            self.stem, channels = conv_stem(config.image_stem_channels), config.image_stem_channels
        else:
            self.stem, channels = resnet_stem(config.image_stem)
        self.proj = nn.Linear(channels, config.d_model)
        if config.image_positions == "learned":
            self.row_pos = nn.Embedding(config.max_image_grid, config.d_model)
            self.col_pos = nn.Embedding(config.max_image_grid, config.d_model)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def positions(self, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
        """(rows*cols) x d_model positions for a grid."""
        if self.config.image_positions == "sinusoidal":
            return sinusoidal_2d(rows, cols, self.config.d_model, device=device, dtype=dtype)
        if max(rows, cols) > self.config.max_image_grid:
            raise ValueError(
                f"image grid {rows}x{cols} exceeds max_image_grid={self.config.max_image_grid}; "
                "raise max_image_grid or use smaller images"
            )
        r = self.row_pos(torch.arange(rows, device=device))
        c = self.col_pos(torch.arange(cols, device=device))
        return (r[:, None] + c[None]).reshape(rows * cols, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.proj.weight.dtype
        x = (images.to(dtype) - self.mean.to(dtype)) / self.std.to(dtype)
        x = self.stem(x)  # B x C x h x w
        b, _, h, w = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))  # B x (h*w) x d
        return x + self.positions(h, w, x.dtype, x.device)[None]
