"""The IMAGE adaptor (`Image.build_adaptor`): pixels -> a grid of d_model-wide tokens."""

import pytest
import torch

from ofasys.model import ModelConfig
from ofasys.modalities import MODALITIES
from ofasys.modalities.image import sinusoidal_2d
from tests.support.threads import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)


def adaptor(**settings):
    config = ModelConfig(d_model=32, heads=4, adaptors={"IMAGE": settings})
    return MODALITIES["IMAGE"].build_adaptor(config)


def test_conv_stem_is_stride_8_with_2d_positions():
    torch.manual_seed(0)
    image = adaptor(stem_channels=16).eval()
    out, mask = image(torch.rand(2, 3, 64, 48), None)
    assert out.shape == (2, 8 * 6, 32) and mask.shape == (2, 48) and mask.all()
    # Same pixels at two grid cells still give different tokens: positions tell them apart.
    flat, _ = image(torch.full((1, 3, 64, 64), 0.5), None)
    assert not torch.allclose(flat[0, 0], flat[0, 9])


def test_sinusoidal_positions_distinct():
    pos = sinusoidal_2d(4, 5, 16)
    assert pos.shape == (20, 16)
    assert len({tuple(p.tolist()) for p in pos}) == 20
    out, _ = adaptor(positions="sinusoidal", max_grid=2)(torch.rand(1, 3, 64, 64), None)
    assert out.shape == (1, 64, 32)  # no grid limit


def test_learned_grid_limit_is_explained():
    with pytest.raises(ValueError, match="max_grid=4; raise model.adaptors.IMAGE.max_grid"):
        adaptor(max_grid=4)(torch.rand(1, 3, 64, 64), None)


def test_resnet_stem_is_stride_16():
    out, _ = adaptor(stem="resnet50").eval()(torch.rand(1, 3, 64, 64), None)
    assert out.shape == (1, 16, 32)


def test_patch_stem_cuts_whole_patches():
    out, _ = adaptor(stem="patch", patch_size=16)(torch.rand(1, 3, 72, 64), None)
    assert out.shape == (1, 4 * 4, 32)  # 72 px rows: 4 whole patches, the rest is dropped

