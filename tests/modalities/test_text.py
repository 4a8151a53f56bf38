import numpy as np
import pytest

from ofasys.modalities import MODALITIES, RejectRow
from ofasys.modalities.text import normalise_text


def test_text_to_ids_round_trip(ctx, vocab):
    out = MODALITIES["TEXT"].materialise("a photo of  two digits ", {}, ctx)
    assert out.array.dtype == np.int32
    assert vocab.decode_text(out.array.tolist()) == "a photo of two digits"
    assert out.ref == "a photo of  two digits "  # refs keep the raw value


def test_uncased_no_punctuation_max_length(ctx, vocab):
    enc = MODALITIES["TEXT"]
    out = enc.materialise("A Photo, of TWO-digits!", {"uncased": True, "no_punctuation": True}, ctx)
    assert vocab.decode_text(out.array.tolist()) == "a photo of two digits"
    full = enc.materialise("zero one two three four five", {}, ctx).array
    cut = enc.materialise("zero one two three four five", {"max_length": 3}, ctx).array
    assert cut.tolist() == full[:3].tolist()


def test_normalise_text():
    assert normalise_text("  Hello,\n World!  ", uncased=True) == "hello, world!"
    assert normalise_text("left-most and/or (right)", no_punctuation=True) == "left most and or right"


@pytest.mark.parametrize("value,reason", [(None, "missing text"), ("   ", "empty text"), (float("nan"), "missing text"), ([1, 2], "not a string")])
def test_bad_text_is_rejected(ctx, value, reason):
    with pytest.raises(RejectRow, match=reason):
        MODALITIES["TEXT"].materialise(value, {}, ctx)


def test_numbers_become_text(ctx, vocab):
    out = MODALITIES["TEXT"].materialise(3, {}, ctx)
    assert vocab.decode_text(out.array.tolist()) == "3"
