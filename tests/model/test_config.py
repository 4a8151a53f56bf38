import pytest

from ofasys.model import PRESETS, ModelConfig, UniversalModel

# OFA paper, table 1 (parameters in millions).
OFA_SIZES = {"tiny": 33, "medium": 93, "base": 180, "large": 470, "huge": 930}


@pytest.mark.parametrize("name", sorted(OFA_SIZES))
def test_preset_sizes_match_ofa(name):
    n = UniversalModel.num_parameters(PRESETS[name]) / 1e6
    assert abs(n - OFA_SIZES[name]) <= 0.25 * OFA_SIZES[name], f"{name}: {n:.1f}M"


def test_tiny_cpu_is_small():
    n = UniversalModel.num_parameters(PRESETS["tiny-cpu"])
    assert 0.5e6 < n < 3e6


def test_dict_round_trip_and_unknown_keys():
    cfg = ModelConfig.preset("tiny-cpu", vocab_size=900)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="d_modle"):
        ModelConfig.from_dict({**cfg.to_dict(), "d_modle": 3})


def test_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=100, heads=3)
    with pytest.raises(ValueError, match="adaptors.IMAGE: .*stem='vit'"):
        ModelConfig(adaptors={"IMAGE": {"stem": "vit"}})
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("gigantic")
