"""A batch packed into one buffer for the trip from a loader worker comes back equal, every tensor a
view of that one buffer, through a real process boundary."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from ofasys.data.batch import Batch, EncoderSegment, FrameTargets
from ofasys.training.batch_transfer import ALIGN, PackedBatch


def sample_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 5, 5, generator=g)
    return Batch(
        task="t", keys=["a", "b", "c"],
        segments=[EncoderSegment("tokens", torch.randint(0, 99, (3, 7), generator=g), torch.rand(3, 7, generator=g) > 0.5),
                  EncoderSegment("IMAGE", image.transpose(2, 3)),  # not contiguous
                  EncoderSegment("AUDIO", torch.zeros(3, 0, 80), torch.zeros(3, 0, dtype=torch.bool))],
        decoder_input=torch.randint(0, 99, (3, 4), generator=g), target=torch.randint(0, 99, (3, 4), generator=g),
        loss_mask=torch.ones(3, 4, dtype=torch.bool), meta=[{"row": i} for i in range(3)],
        frames=FrameTargets("MOTION", torch.arange(6).view(3, 2), torch.ones(3, 2, dtype=torch.bool),
                            values=torch.rand(3, 2, 9, generator=g, dtype=torch.float64)))


def tensors(batch: Batch) -> list[torch.Tensor | None]:
    f = batch.frames
    return ([t for s in batch.segments for t in (s.tensor, s.mask)] + [batch.decoder_input, batch.target, batch.loss_mask]
            + [f.index, f.mask, f.values, f.noise, f.level, f.progress])


def assert_same(a: Batch, b: Batch) -> None:
    assert (a.task, a.keys, a.meta, [s.kind for s in a.segments]) == (b.task, b.keys, b.meta, [s.kind for s in b.segments])
    for x, y in zip(tensors(a), tensors(b), strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def test_packed_batch_unpacks_to_equal_tensors_viewing_one_buffer():
    batch = sample_batch()
    packed = PackedBatch.of(batch)
    assert packed.buffer.dtype == torch.uint8 and packed.buffer.dim() == 1
    assert all(offset % ALIGN == 0 for _, _, offset, _ in packed.specs)
    back = packed.unpack()
    assert_same(back, batch)
    storage = packed.buffer.untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == storage for t in tensors(back) if t is not None)
    assert_same(packed.pin_memory().unpack() if torch.cuda.is_available() else back, batch)


def _round_trip(queue_in, queue_out, received) -> None:
    queue_out.put(PackedBatch.of(queue_in.get().unpack()))
    received.wait(120)  # a shared tensor's sender must live until the receiver has mapped it


def test_packed_batch_crosses_processes_as_one_shared_tensor():
    ctx = mp.get_context("spawn")
    queue_in, queue_out, received = ctx.Queue(), ctx.Queue(), ctx.Event()
    worker = ctx.Process(target=_round_trip, args=(queue_in, queue_out, received))
    worker.start()
    try:
        queue_in.put(PackedBatch.of(sample_batch()))
        back = queue_out.get(timeout=120)
    finally:
        received.set()
        worker.join(timeout=60)
    assert worker.exitcode == 0
    assert back.buffer.is_shared()
    assert_same(back.unpack(), sample_batch())
