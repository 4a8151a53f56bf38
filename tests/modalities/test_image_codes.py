"""IMAGE with preprocess=image_vqgan: the image as grid x grid code tokens of the run's VQ tokenizer,
stored beside (not instead of) the same column's pixels, generated as exactly grid * grid codes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ofasys.data.members import plan_members
from ofasys.data.plan import OutputPlan
from ofasys.instruction import parse_instruction
from ofasys.modalities import IMAGE_CODE_GRID, MODALITIES, RowContext
from ofasys.modalities.image import IMAGE_CODES, ImageCodes
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from tests.support.vq import blocky_images, tiny_tokenizer

T2I = "<BOS> draw [TEXT:cap] <EOS> -> <BOS> [IMAGE:img,preprocess=image_vqgan] <EOS>"


@pytest.fixture(scope="module")
def code_vocab() -> UnifiedVocab:
    tok = train_text_tokenizer(["draw a red square", "complete the image"] * 5, vocab_size=280)
    return UnifiedVocab.build(tok, num_bins=8, num_codes=16)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_the_preprocess_picks_the_codes_variant_with_its_own_member_name():
    assert MODALITIES["IMAGE"].variant("image_vqgan") is IMAGE_CODES
    assert MODALITIES["IMAGE"].variant(None) is MODALITIES["IMAGE"]
    members = plan_members(parse_instruction(
        "[IMAGE:img] <BOS> the codes? <EOS> -> <BOS> [IMAGE:img,preprocess=image_vqgan] <EOS>"))
    assert [(m.name, m.handler.token_run, m.handler.dtype) for m in members] == [
        ("img.image", False, "uint8"), ("img.image_codes", True, "int32")]


def test_codes_are_the_tokenizers_codes_as_ids_of_the_code_block(code_vocab):
    tokenizer = tiny_tokenizer()
    pixels = blocky_images(1, size=40, seed=9)[0]  # not the tokenizer's size: resized like pixels are
    ctx = RowContext(vocab=code_vocab, image_size=64, image_codes=tokenizer)
    out = IMAGE_CODES.materialise(_png(pixels), {}, ctx)
    small = np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.BICUBIC))
    expected = tokenizer.encode(small[None])[0].reshape(-1)
    assert out.array.dtype == np.int32 and out.array.shape == (16,)
    assert all(int(t) in code_vocab.code_range for t in out.array)
    np.testing.assert_array_equal(out.array - code_vocab.code_range.start, expected)
    assert out.ref == [int(c) for c in expected]
    assert out.meta == {"width": 40, "height": 40}


def test_without_a_tokenizer_or_with_a_mismatched_code_block_it_refuses(code_vocab, vocab_without_codes):
    png = _png(blocky_images(1)[0])
    with pytest.raises(RuntimeError, match="needs the VQ tokenizer"):
        IMAGE_CODES.materialise(png, {}, RowContext(vocab=code_vocab, image_size=32))
    with pytest.raises(RuntimeError, match="set assets.num_codes to match"):
        IMAGE_CODES.materialise(png, {}, RowContext(vocab=vocab_without_codes, image_size=32,
                                                    image_codes=tiny_tokenizer()))


@pytest.fixture(scope="module")
def vocab_without_codes() -> UnifiedVocab:
    return UnifiedVocab.build(train_text_tokenizer(["a b c"] * 5, vocab_size=270), num_bins=8)


def test_generation_is_exactly_the_grid_of_code_ids_then_eos(code_vocab):
    template = parse_instruction(T2I).templates[0]
    plan = OutputPlan.build(template, code_vocab, assets={IMAGE_CODE_GRID: 4})
    codes = list(code_vocab.code_range)
    generated: list[int] = []
    for i in range(16):
        allowed = plan.allowed(generated)
        assert tuple(allowed) == tuple(codes)
        generated.append(codes[(3 * i) % 16])
    assert plan.allowed(generated) == [code_vocab.eos]
    decoded = plan.decode(generated + [code_vocab.eos])
    assert decoded == {"img": [(3 * i) % 16 for i in range(16)]}
    assert plan.decode(generated[:5]) == {"img": [(3 * i) % 16 for i in range(5)]}  # cut short: what came out


def test_a_plan_without_the_grid_says_where_it_comes_from(code_vocab):
    template = parse_instruction(T2I).templates[0]
    with pytest.raises(ValueError, match="manifest records"):
        OutputPlan.build(template, code_vocab)


def test_it_is_not_registered_under_its_own_name():
    """One modality, one name: IMAGE; the codes variant is reached through its preprocess."""
    assert MODALITIES["IMAGE"].name == ImageCodes.name and all(m is not IMAGE_CODES for m in MODALITIES.values())
