"""The frames of a frame output (MOTION, speech), after the token search has decided how many.

The search walks a frame output's placeholders like any other step (`<mask>` to go on, the terminator
to stop), so it fixes each sample's length; one teacher-forced decoder pass then gives the
placeholders' states, and the modality's output head turns them into frames. A diffusion head starts
from noise drawn per sample from (seed, sample key, column), so a sample's frames do not depend on the
batch it is generated in, and a second run gives the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ofasys.data.masking import key_rng


def generated_frames(model: Any, batch: Any, plans: Sequence[Any], generated: Sequence[Sequence[int]],
                     keys: Sequence[str], collator: Any) -> list[dict[str, np.ndarray]]:
    """Per sample, {column: steps x width frames in the stored array's units} of its frame output
    ({} when its plan has none, or it generated no placeholder). `collator` gives the statistics the
    frames were normalised by in training and the seed of the sampling noise."""
    if not any(step.kind == "frames" for plan in plans for step in plan.steps):
        return [{} for _ in generated]
    found = [plan.frame_output(g) for plan, g in zip(plans, generated)]
    rows = [i for i, f in enumerate(found) if f is not None and f[2]]
    out: list[dict[str, np.ndarray]] = [{} for _ in generated]
    if not rows:
        return out
    step, handler, _ = found[rows[0]]
    member = f"{step.column}.{handler.tag}"
    mean, std = collator.frame_stats(member)
    head = model.output_head(handler.name)
    width = head.width
    longest = max(len(found[i][2]) for i in rows)
    lengths = (batch.decoder_input != model.config.pad_id).sum(1).tolist()
    index = torch.zeros((len(generated), longest), dtype=torch.long)
    mask = torch.zeros((len(generated), longest), dtype=torch.bool)
    noise = np.zeros((len(generated), longest, width), np.float32) if handler.diffusion else None
    for i in rows:
        positions = found[i][2]
        index[i, : len(positions)] = torch.as_tensor([lengths[i] + p - 1 for p in positions])
        mask[i, : len(positions)] = True
        if noise is not None:
            draw = key_rng(collator.seed, keys[i], step.column or "", "sample")
            noise[i, : len(positions)] = draw.standard_normal((len(positions), width)).astype(np.float32)
    frames = model.output_frames(batch, generated, handler.name, index, mask,
                                 None if noise is None else torch.from_numpy(noise))
    frames = frames.float().cpu().numpy()
    for i in rows:
        n = len(found[i][2])
        out[i] = {step.column: frames[i, :n] * std + mean}
    return out
