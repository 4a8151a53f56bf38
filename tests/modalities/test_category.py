import pytest

from ofasys.modalities import MODALITIES, RejectRow


def test_label_tokens(ctx, vocab):
    enc = MODALITIES["CATEGORY"]
    out = enc.materialise("Two", {"uncased": True}, ctx)
    assert out.array.tolist() == vocab.encode_text("two")
    assert enc.normalise(7, {}) == "7"
    with pytest.raises(RejectRow, match="missing label"):
        enc.materialise(None, {}, ctx)
