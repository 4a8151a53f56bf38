import pytest
import torch

from ofasys.model import ModelConfig
from ofasys.model.adaptors import ImageAdaptor, sinusoidal_2d


def test_conv_stem_is_stride_8_with_2d_positions():
    torch.manual_seed(0)
    adaptor = ImageAdaptor(ModelConfig(d_model=32, heads=4, image_stem_channels=16)).eval()
    out = adaptor(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 8 * 6, 32)
    # Same pixels at two grid cells still give different tokens: positions tell them apart.
    flat = adaptor(torch.full((1, 3, 64, 64), 0.5))
    assert not torch.allclose(flat[0, 0], flat[0, 9])


def test_sinusoidal_positions_distinct():
    pos = sinusoidal_2d(4, 5, 16)
    assert pos.shape == (20, 16)
    assert len({tuple(p.tolist()) for p in pos}) == 20
    adaptor = ImageAdaptor(ModelConfig(d_model=32, heads=4, image_positions="sinusoidal",
                                       max_image_grid=2))
    assert adaptor(torch.rand(1, 3, 64, 64)).shape == (1, 64, 32)  # no grid limit


def test_learned_grid_limit_is_explained():
    adaptor = ImageAdaptor(ModelConfig(d_model=32, heads=4, max_image_grid=4))
    with pytest.raises(ValueError, match="max_image_grid"):
        adaptor(torch.rand(1, 3, 64, 64))


def test_resnet_stem_is_stride_16():
    adaptor = ImageAdaptor(ModelConfig(d_model=32, heads=4, image_stem="resnet50")).eval()
    assert adaptor(torch.rand(1, 3, 64, 64)).shape == (1, 16, 32)
