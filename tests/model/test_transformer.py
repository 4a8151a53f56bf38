import torch

from ofasys.model.transformer import DecoderLayer, EncoderLayer

from .helpers import tiny_config


def test_decoder_layer_cache_matches_causal_pass():
    torch.manual_seed(0)
    layer = DecoderLayer(tiny_config()).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    memory_mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    memory_mask[1, ..., 4:] = False
    kv = layer.cross_kv(memory)
    with torch.no_grad():
        full = layer(x, kv, memory_mask)
        cache: dict = {}
        steps = [layer(x[:, t:t + 1], kv, memory_mask, cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache["k"].shape == (2, 4, 5, 8)


def test_decoder_is_causal_and_respects_memory_mask():
    torch.manual_seed(0)
    layer = DecoderLayer(tiny_config()).eval()
    x, memory = torch.randn(1, 5, 32), torch.randn(1, 7, 32)
    mask = torch.tensor([[[[True] * 4 + [False] * 3]]])
    x2, memory2 = x.clone(), memory.clone()
    x2[:, 3:] += 1.0  # future positions
    memory2[:, 4:] += 1.0  # masked encoder positions
    with torch.no_grad():
        a = layer(x, layer.cross_kv(memory), mask)
        b = layer(x2, layer.cross_kv(memory2), mask)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_normformer_norms_are_optional():
    with_norms = sum(p.numel() for p in EncoderLayer(tiny_config(head_scale=True)).parameters())
    plain = sum(p.numel() for p in EncoderLayer(tiny_config(normformer=False, head_scale=False)).parameters())
    # post-attention LN (2 x 32), FFN mid LN (2 x 64), head scales (4)
    assert with_norms - plain == 2 * 32 + 2 * 64 + 4
