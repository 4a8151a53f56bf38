"""IMAGE and VIDEO batches carry uint8 pixels; the adaptors make the floats on the device.

The model must compute exactly what it computed when collation made float32 pixels in [0, 1] with
numpy (`x.astype(float32) / float32(255)`): the same losses, encoder states and gradients, bit for
bit, on a real batch (a real photo, real video clips), in float32 and on the bf16 training path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ofasys.data.batch import Batch, EncoderSegment
from ofasys.data.collate import Collator, Sample
from ofasys.instruction import parse_instruction
from ofasys.model import ModelConfig
from ofasys.model.universal import UniversalModel
from ofasys.modalities import MODALITIES, RowContext
from ofasys.modalities.image import unit_pixels
from pipeline.demo.video import encode
from tests.support.threads import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)

INSTRUCTION = "[IMAGE:img] [VIDEO:clip] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>"
CAPTIONS = ["a photo of two digits", "zero one two three", "four five"]
PIXEL_KINDS = ("IMAGE", "VIDEO")


def old_float_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """What IMAGE and VIDEO collation made before: float32 in [0, 1] by numpy's float32 division."""
    out = pixels.numpy().astype(np.float32)
    out /= np.float32(255.0)
    return torch.from_numpy(out)


def with_float_pixels(batch: Batch) -> Batch:
    return Batch(**{**batch.__dict__, "segments": [
        EncoderSegment(s.kind, old_float_pixels(s.tensor), s.mask) if s.kind in PIXEL_KINDS else s
        for s in batch.segments]})


@pytest.fixture(scope="module")
def batch(vocab) -> Batch:
    """A collated batch of three samples: crops of a real photo and real clips panning over it."""
    import skimage.data

    photo = skimage.data.astronaut()
    ctx = RowContext(vocab=vocab, image_size=32)
    samples = []
    for i, cap in enumerate(CAPTIONS):
        crop = np.ascontiguousarray(photo[40 * i : 40 * i + 200, 60 * i : 60 * i + 180])
        pan = [np.ascontiguousarray(photo[100 + 8 * i : 148 + 8 * i, 4 * k : 4 * k + 80]) for k in range(6)]
        image = MODALITIES["IMAGE"].materialise(crop, {}, ctx)
        clip = MODALITIES["VIDEO"].materialise(encode(pan, "mp4", 10), {}, ctx)
        samples.append(Sample(f"k{i}", {"meta": {"img": image.meta, "clip": clip.meta}},
                              {"img.image": image.array, "clip.video": clip.array,
                               "cap.text": np.asarray(vocab.encode_text(cap), np.int32)}))
    return Collator(parse_instruction(INSTRUCTION), vocab, "t").collate(samples, np.random.default_rng(0), train=True)


def model(vocab) -> UniversalModel:
    config = ModelConfig(vocab_size=vocab.size, d_model=32, encoder_layers=1, decoder_layers=1, heads=4, ffn_dim=64,
                         adaptors={"IMAGE": {"stem_channels": 16}, "VIDEO": {"stem_channels": 16, "max_frames": 4}})
    return UniversalModel(config, seed=0)


def test_unit_pixels_is_numpys_float32_division_for_every_value():
    every = torch.arange(256, dtype=torch.uint8)
    got = unit_pixels(every)
    assert got.dtype == torch.float32
    assert np.array_equal(got.numpy().view(np.uint32), old_float_pixels(every).numpy().view(np.uint32))
    floats = torch.rand(3)
    assert unit_pixels(floats) is floats  # floats in [0, 1] are taken as they are
    with pytest.raises(TypeError, match="pixels must be uint8"):
        unit_pixels(torch.zeros(3, dtype=torch.int64))


def test_batches_carry_uint8_pixels_a_quarter_of_the_float_bytes(batch):
    pixels = {s.kind: s.tensor for s in batch.segments if s.kind in PIXEL_KINDS}
    assert pixels["IMAGE"].dtype == pixels["VIDEO"].dtype == torch.uint8
    assert tuple(pixels["IMAGE"].shape) == (3, 3, 32, 32) and tuple(pixels["VIDEO"].shape) == (3, 4, 3, 32, 32)
    for t in pixels.values():
        assert 4 * t.nbytes == old_float_pixels(t).nbytes and t.float().std() > 10  # real pixels, not blank


def test_loss_states_and_gradients_are_bit_identical_to_float_pixels(vocab, batch):
    floats = with_float_pixels(batch)
    results = []
    for b in (batch, floats):
        net = model(vocab).train()
        torch.manual_seed(1)  # the same dropout draws for both
        memory, _ = net.encode(b)
        torch.manual_seed(1)
        loss, _ = net.loss(b)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        results.append((memory.detach(), loss.detach(), grads))
    (memory, loss, grads), (memory_f, loss_f, grads_f) = results
    assert torch.equal(memory, memory_f) and torch.equal(loss, loss_f)
    assert any(n.startswith("adaptors.VIDEO") for n in grads) and any(n.startswith("adaptors.IMAGE") for n in grads)
    assert grads.keys() == grads_f.keys() and all(torch.equal(grads[n], grads_f[n]) for n in grads)
    # and it can fail: one pixel one step brighter changes the encoder states
    brighter = with_float_pixels(batch)
    [image] = [s.tensor for s in brighter.segments if s.kind == "IMAGE"]
    image[0, 0, 5, 5] += 1 / 255
    torch.manual_seed(1)
    assert not torch.equal(model(vocab).train().encode(brighter)[0], memory_f)


def test_the_bf16_training_path_is_bit_identical_too(vocab, batch):
    """bf16: the trainer casts float inputs to bf16 (`_batch_to`) and leaves uint8 alone; the adaptor
    makes float32 in [0, 1] and then takes the weights' dtype, which rounds the same values."""
    from ofasys.training.trainer import _batch_to

    losses = []
    for b in (batch, with_float_pixels(batch)):
        moved = _batch_to(b, torch.device("cpu"), torch.bfloat16)
        kinds = {s.kind: s.tensor.dtype for s in moved.segments}
        assert kinds["IMAGE"] == (torch.uint8 if b is batch else torch.bfloat16)
        net = model(vocab).to(torch.bfloat16).eval()
        with torch.no_grad():
            losses.append(net.loss(moved)[0])
    assert torch.equal(losses[0], losses[1])
