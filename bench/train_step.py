"""Forward+backward steps/s of the tiny CPU model at 1 and 2 torch threads, interleaved.

Why: on a 2-core machine the right thread count depends on what else runs; this prints the ratio
measured in one process so the choice is made on evidence.
"""

from __future__ import annotations

import time

import torch

from ofasys.data.batch import Batch, EncoderSegment
from ofasys.modalities.image import Image
from ofasys.model import ModelConfig, build_model


def make_batch(vocab: int, b: int = 64, text: int = 16, out: int = 12, image: int = 64) -> Batch:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, vocab, (b, text), generator=g)
    dec = torch.randint(5, vocab, (b, out), generator=g)
    return Batch(
        task="bench",
        keys=[str(i) for i in range(b)],
        segments=[
            EncoderSegment(Image.name, torch.rand(b, 3, image, image, generator=g)),
            EncoderSegment("tokens", tokens, torch.ones_like(tokens, dtype=torch.bool)),
        ],
        decoder_input=dec,
        target=dec.roll(-1, 1),
        loss_mask=torch.ones_like(dec, dtype=torch.bool),
    )


def steps_per_second(model, opt, batch, threads: int, seconds: float = 5.0) -> float:
    torch.set_num_threads(threads)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss, _ = model.loss(batch, 0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    config = ModelConfig.preset("tiny-cpu", vocab_size=850)
    model = build_model(config, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch(config.vocab_size)
    steps_per_second(model, opt, batch, 2, 2.0)  # warm up
    rounds = {1: [], 2: []}
    for _ in range(3):  # interleave, so background load hits both settings alike
        for threads in (1, 2):
            rounds[threads].append(steps_per_second(model, opt, batch, threads))
    one, two = (sorted(rounds[t])[1] for t in (1, 2))
    print(f"tiny-cpu fwd+bwd, batch 64: 1 thread {one:.2f} steps/s, 2 threads {two:.2f} steps/s, "
          f"ratio 2/1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
