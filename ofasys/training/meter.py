"""Per-task training figures between two log steps, reduced over ranks.

Kept apart from the loop so the loop reads as the algorithm; what is logged and how it is averaged
(the unsmoothed NLL per target token when the model reports it, token accuracy, throughput) lives here.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist


def as_float(x: Any) -> float:
    """A Python float from a tensor (any dtype or device) or a number."""
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


class TaskMeter:
    """Sums per task between two log steps; `reduce` all-reduces them and returns the metrics."""

    FIELDS = ("n", "loss", "ntokens", "nll_sum", "has_nll", "correct", "has_correct", "samples", "tokens")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.sums = np.zeros((len(self.names), len(self.FIELDS)), dtype=np.float64)
        self.t0 = time.perf_counter()

    def add(self, task: str, loss: float, stats: Mapping[str, Any], ntokens: int, samples: int,
            tokens: int) -> None:
        row = self.sums[self.names.index(task)]
        row[0] += 1
        row[1] += loss * max(ntokens, 1)
        row[2] += ntokens
        if "nll_sum" in stats:
            row[3] += as_float(stats["nll_sum"])
            row[4] += 1
        if "correct" in stats:
            row[5] += as_float(stats["correct"])
            row[6] += 1
        row[7] += samples
        row[8] += tokens

    def reduce(self, world: int, device: torch.device) -> dict[str, float]:
        sums = self.sums.copy()
        if world > 1:  # on the engine's device: NCCL cannot reduce CPU tensors
            t = torch.from_numpy(sums).to(device)
            dist.all_reduce(t)
            sums = t.cpu().numpy()
        seconds = max(time.perf_counter() - self.t0, 1e-9)
        metrics: dict[str, float] = {}
        total_nll = total_tok = 0.0
        for name, row in zip(self.names, sums):
            n, loss, ntok, nll, has_nll, correct, has_correct = row[:7]
            if n == 0:
                continue
            denom = max(ntok, 1.0)
            # The unsmoothed NLL when the model reports it (comparable across label smoothing).
            value = nll / denom if has_nll == n else loss / denom
            metrics[f"train/loss/{name}"] = float(value)
            total_nll += value * denom
            total_tok += denom
            if has_correct == n:
                metrics[f"train/acc/{name}"] = float(correct / denom)
        if total_tok:
            metrics["train/loss"] = float(total_nll / total_tok)
        metrics["samples/s"] = float(sums[:, 7].sum()) / seconds
        metrics["tokens/s"] = float(sums[:, 8].sum()) / seconds
        self.sums[:] = 0
        self.t0 = time.perf_counter()
        return metrics
