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


def test_shared_memory_attention_matches_a_copy_per_row():
    """Beams attending together to one copy of their sample's memory = each row attending to its own
    copy; a sample whose memory is all padding gets what the per-row attention gives it (zeros)."""
    torch.manual_seed(0)
    layer = DecoderLayer(tiny_config()).eval()
    beams, memory = 3, torch.randn(3, 7, 32)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2] = False  # nothing to attend to
    x = torch.randn(3 * beams, 1, 32)
    with torch.no_grad():
        shared = layer.shared_memory(memory, mask)
        assert shared.keys.shape == (3, 4, 8, 7) and shared.values.shape == (3, 4, 7, 8)  # once per sample
        together = layer(x, shared, None, cache={})
        k, v = layer.cross_kv(memory)
        per_row = layer(x, (k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0)),
                        mask.repeat_interleave(beams, 0)[:, None, None, :], cache={})
    torch.testing.assert_close(together, per_row, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(together).all()
