"""A check shared by the modality tests: a few optimiser steps on one batch train the adaptor."""

from __future__ import annotations

import torch


def assert_adaptor_learns(model, batch, adaptor: str, steps: int = 5, lr: float = 3e-3) -> None:
    """`steps` Adam steps on `batch`: every parameter of `model.adaptors[adaptor]` gets a gradient, some
    non-zero, and the loss falls below 0.8 x its first value (the modality's signal reaches the loss)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss, stats = model.loss(batch)
        assert torch.isfinite(loss) and stats["ntokens"] > 0
        optimiser.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.adaptors[adaptor].parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
        optimiser.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        last = float(model.loss(batch)[0])
    assert last < 0.8 * first
