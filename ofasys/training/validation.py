"""Validation during training: per-task loss on the valid split, and which step's weights are best.

Validation is the unsmoothed NLL per target token (what `train/loss/<task>` reports), on at most
`valid_samples` samples per task in index order, collated with a fixed generator so every validation
sees the same inputs (the same infilling masks): curves move only because the model does. The
selection score is the unweighted mean over tasks, so a task with a small mixture weight counts as
much as the others in deciding which weights are exported.

Every rank runs the same number of forward passes (a rank with nothing left repeats a sample and
discards it), because ZeRO-3 gathers parameters collectively inside each forward.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_VALID_TAG = 0x7A11D
"""Seed-stream tag of validation collation (kept apart from training's streams)."""

BEST_WEIGHTS = "best.safetensors"
"""File (in the checkpoint dir) holding the weights of the best validation so far."""


@dataclass
class BestSoFar:
    """The selection state carried through checkpoints, so a resumed run selects as an unbroken one."""

    step: int = -1
    score: float = math.inf
    sha256: str = ""
    """Of BEST_WEIGHTS as written for `step` (checked before it is exported)."""
    stale: int = 0
    """Validations since the last improvement (early stopping counts these)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "BestSoFar":
        return cls(**json.loads(text)) if text else cls()

    def update(self, step: int, score: float, min_delta: float = 0.0) -> bool:
        """Record a validation; True when `score` (lower is better) improves on the best."""
        if score < self.score - min_delta:
            self.step, self.score, self.stale = step, score, 0
            return True
        self.stale += 1
        return False


def _batches(count: int, rank: int, world: int, batch_size: int) -> list[list[int | None]]:
    """This rank's share of `range(count)` in batches, padded with None to the same number of
    batches on every rank (None = run a throwaway sample)."""
    mine = list(range(rank, count, world))
    per_rank = math.ceil(math.ceil(count / world) / batch_size) if count else 0
    out: list[list[int | None]] = []
    for b in range(per_rank):
        chunk: list[int | None] = list(mine[b * batch_size:(b + 1) * batch_size])
        out.append(chunk if chunk else [None])
    return out


def validation_losses(forward: Callable[[Any], tuple[torch.Tensor, Mapping[str, Any]]], tasks: Sequence[Any],
                      *, seed: int, max_samples: int, batch_size: int, rank: int, world: int,
                      to_device: Callable[[Any], Any], device: torch.device) -> dict[str, float]:
    """`valid/loss/<task>`, `valid/acc/<task>` and `valid/loss` (the mean over tasks), reduced over ranks.

    `forward(batch)` is the training module's forward (loss, stats with ntokens, nll_sum, correct);
    the caller puts it in eval mode. `tasks` are the valid splits, in a fixed order.
    """
    sums = np.zeros((len(tasks), 3), dtype=np.float64)  # nll_sum, ntokens, correct
    for k, task in enumerate(tasks):
        count = min(len(task), max_samples) if max_samples else len(task)
        rng = np.random.default_rng([seed, _VALID_TAG, k])
        for chunk in _batches(count, rank, world, batch_size):
            real = [i for i in chunk if i is not None]
            samples = [task.get(i) for i in (real or [0])]
            batch = to_device(task.collate(samples, rng, False, epoch=0))
            with torch.no_grad():
                _, stats = forward(batch)
            if real:
                sums[k] += (float(stats["nll_sum"]), float(stats["ntokens"]), float(stats.get("correct", 0)))
    if world > 1:
        t = torch.from_numpy(sums).to(device)
        dist.all_reduce(t)
        sums = t.cpu().numpy()
    metrics: dict[str, float] = {}
    losses = []
    for task, (nll, ntok, correct) in zip(tasks, sums):
        if ntok == 0:
            continue
        metrics[f"valid/loss/{task.name}"] = float(nll / ntok)
        metrics[f"valid/acc/{task.name}"] = float(correct / ntok)
        losses.append(nll / ntok)
    if losses:
        metrics["valid/loss"] = float(np.mean(losses))
    return metrics


def save_best_weights(state: Mapping[str, torch.Tensor], ckpt_dir: Path) -> str:
    """Write `state` as BEST_WEIGHTS atomically (temp file, then rename); returns its sha256."""
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / (BEST_WEIGHTS + ".tmp")
    # cloned: tied weights share storage, which safetensors refuses; the export re-ties them
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, ckpt_dir / BEST_WEIGHTS)
    return digest


def load_best_weights(ckpt_dir: Path, best: BestSoFar) -> dict[str, torch.Tensor]:
    """The weights of `best.step`, checked against the sha256 recorded with it (safetensors: no pickle)."""
    from safetensors.torch import load_file

    path = ckpt_dir / BEST_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the best-validation weights (step {best.step}) are missing; "
                                "set train.export_best: false to export the last weights, or retrain")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != best.sha256:
        raise ValueError(f"{path} is not the weights of step {best.step} (sha256 {digest[:12]} != "
                         f"{best.sha256[:12]}); retrain, or set train.export_best: false")
    return load_file(str(path))
