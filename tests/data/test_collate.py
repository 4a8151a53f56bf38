import numpy as np
import pytest
import torch

from ofasys.data.collate import Collator, Sample
from ofasys.instruction import parse_instruction

CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
GROUNDING = '[IMAGE:img] <BOS> which region does the text " [TEXT:query] " describe? <EOS> -> [BOX:region,add_bos,add_eos]'
INFILL = '<BOS> what is the complete text of " [TEXT:text,mask_ratio=0.3] "? <EOS> -> <BOS> [TEXT:text] <EOS>'


def img(seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def sample(key, **arrays):
    return Sample(key, {"meta": {"img": {"width": 100, "height": 50}}}, {k: np.asarray(v) for k, v in arrays.items()})


def test_caption_layout_and_loss(vocab):
    col = Collator(parse_instruction(CAPTION), vocab, "caption")
    c1, c2 = vocab.encode_text("one two three"), vocab.encode_text("four")
    samples = [
        sample("train-000000000", **{"img.image": img(0), "cap.text": np.int32(c1)}),
        sample("train-000000001", **{"img.image": img(1), "cap.text": np.int32(c2)}),
    ]
    b = col.collate(samples, np.random.default_rng(0), train=True)
    assert b.keys == ["train-000000000", "train-000000001"] and b.task == "caption"
    image, prompt = b.segments
    assert image.kind == "IMAGE" and image.tensor.shape == (2, 3, 8, 8) and image.tensor.dtype == torch.uint8
    assert torch.equal(image.tensor[1], torch.from_numpy(img(1)).permute(2, 0, 1))  # the stored pixels, channel-first
    p = [vocab.bos, *vocab.encode_text("what does the image describe?"), vocab.eos]
    assert prompt.kind == "tokens" and prompt.tensor.tolist() == [p, p] and prompt.mask.all()
    T = len(c1) + 1
    assert b.decoder_input.tolist() == [[vocab.bos, *c1], [vocab.bos, *c2] + [0] * (T - len(c2) - 1)]
    assert b.target.tolist() == [[*c1, vocab.eos], [*c2, vocab.eos] + [0] * (T - len(c2) - 1)]
    assert b.loss_mask.tolist() == [[True] * T, [True] * (len(c2) + 1) + [False] * (T - len(c2) - 1)]
    assert b.meta[0]["meta"]["img"]["width"] == 100


def test_grounding_layout_and_loss(vocab):
    col = Collator(parse_instruction(GROUNDING), vocab, "grounding")
    q = vocab.encode_text("two")
    box = [vocab.bin_id(i) for i in (1, 2, 9, 12)]
    b = col.collate([sample("k", **{"img.image": img(0), "query.text": q, "region.box": box})], np.random.default_rng(0), False)
    assert [s.kind for s in b.segments] == ["IMAGE", "tokens"]
    expect = [vocab.bos, *vocab.encode_text('which region does the text "'), *q, *vocab.encode_text('" describe?'), vocab.eos]
    assert b.segments[1].tensor.tolist() == [expect]
    assert b.decoder_input.tolist() == [[vocab.bos, *box]]
    assert b.target.tolist() == [[*box, vocab.eos]]
    assert b.loss_mask.tolist() == [[True] * 5]


def test_forced_prompt_and_no_loss_carry_no_loss(vocab):
    col = Collator(parse_instruction("[TEXT:q] -> answer: [TEXT:q,no_loss] is [TEXT:a]"), vocab, "t")
    q, a = vocab.encode_text("two"), vocab.encode_text("three four")
    b = col.collate([sample("k", **{"q.text": q, "a.text": a})], np.random.default_rng(0), True)
    ans, is_ = vocab.encode_text("answer:"), vocab.encode_text("is")
    seq = [vocab.bos, *ans, *q, *is_, *a, vocab.eos]
    loss = [False] * (len(ans) + len(q) + len(is_)) + [True] * (len(a) + 1)
    assert b.decoder_input.tolist() == [seq[:-1]] and b.target.tolist() == [seq[1:]]
    assert b.loss_mask.tolist() == [loss]
    gen = col.collate_for_generation([sample("k", **{"q.text": q, "a.text": a})])
    assert gen.decoder_input.tolist() == [[vocab.bos, *ans, *q, *is_]]  # no_loss slot forced from the sample


def test_infill_masks_at_train_and_reproducibly_at_eval(vocab):
    col = Collator(parse_instruction(INFILL), vocab, "infill", seed=3)
    text = np.int32(vocab.encode_text("one two three four five six seven eight nine zero one two"))
    s = sample("valid-000000004", **{"text.text": text})
    head = len(vocab.encode_text('what is the complete text of "')) + 1
    tail = len(vocab.encode_text('"?')) + 1

    def enc(batch):
        return batch.segments[0].tensor[0, head : batch.segments[0].tensor.shape[1] - tail].tolist()

    e1 = enc(col.collate([s], np.random.default_rng(0), train=False))
    e2 = enc(col.collate([s], np.random.default_rng(99), train=False))
    assert e1 == e2 and vocab.mask in e1 and len(e1) < len(text)
    g = col.collate_for_generation([s])
    assert enc(g) == e1
    train = {tuple(enc(col.collate([s], np.random.default_rng(i), train=True))) for i in range(8)}
    assert len(train) > 1 and all(vocab.mask in t for t in train)
    # decoder side always sees the full text
    b = col.collate([s], np.random.default_rng(0), train=True)
    assert b.target.tolist() == [[*text.tolist(), vocab.eos]]


def test_template_choice_uses_rng(vocab):
    col = Collator(parse_instruction("[TEXT:q] -> [TEXT:a] ||| question: [TEXT:q] -> [TEXT:a]"), vocab, "t")
    s = sample("k", **{"q.text": vocab.encode_text("two"), "a.text": vocab.encode_text("three")})
    widths = {col.collate([s], np.random.default_rng(i), True).segments[0].tensor.shape[1] for i in range(10)}
    assert len(widths) == 2


def test_closed_set_plan_from_collator(vocab):
    col = Collator(parse_instruction("[TEXT:q] -> [TEXT:a,closed_set]"), vocab, "vqa", closed_sets={"a": ["two", "three four"]})
    plan = col.plan()
    assert plan.prefix == (vocab.bos,)
    first = sorted({vocab.encode_text("two")[0], vocab.encode_text("three four")[0]})
    assert sorted(plan.allowed([])) == first


def test_missing_array_is_a_clear_error(vocab):
    col = Collator(parse_instruction(CAPTION), vocab, "caption")
    with pytest.raises(KeyError, match="cap.text"):
        col.collate([sample("k", **{"img.image": img(0)})], np.random.default_rng(0), True)


def test_inference_sample_from_raw_row(vocab):
    import io

    from PIL import Image

    from ofasys.data.materialise import RowRejected, sample_from_row

    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(buf, format="PNG")
    s = sample_from_row(GROUNDING, {"img": buf.getvalue(), "query": "two"}, vocab, image_size=8, task="grounding")
    assert set(s.arrays) == {"img.image", "query.text"}  # the output is generated, not needed
    assert s.meta["meta"] == {"img": {"width": 40, "height": 20}}
    col = Collator(parse_instruction(GROUNDING), vocab, "grounding")
    b = col.collate_for_generation([s])
    assert b.segments[0].tensor.shape == (1, 3, 8, 8) and b.decoder_input.tolist() == [[vocab.bos]]
    bins = [vocab.bin_id(i) for i in (0, 0, 15, 15)]
    assert col.plan(s).decode(bins, s.meta) == {"region": [0.0, 0.0, 40.0, 20.0]}
    with pytest.raises(RowRejected, match="img"):
        sample_from_row(GROUNDING, {"img": b"junk", "query": "two"}, vocab, image_size=8)
