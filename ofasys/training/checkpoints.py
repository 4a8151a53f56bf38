"""The trainer's DeepSpeed checkpoints: save with every rank's sampler state and sign them; verify,
load weights-only and check that a resume continues the same run exactly.

Apart from the loop (`trainer.py`) because this is where the security and exactness promises are
kept: a checkpoint is signed by rank 0 with a key outside the checkpoint directory
(`checkpoint_integrity.py`) after DeepSpeed wrote it, and on resume every file of the tag is
verified before a byte of it is unpickled, by torch's weights-only unpickler. A resumed run must
have the same world size and the same TrainConfig (but for `RESUME_MAY_DIFFER`), or it is refused.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ofasys.training.checkpoint_integrity import (CheckpointIntegrityError, checkpoint_key, has_checkpoint_state,
                                                  sign_checkpoint, verify_checkpoint, weights_only_loads)
from ofasys.training.config import TrainConfig
from ofasys.training.sampler import WeightedMultitaskSampler
from ofasys.training.validation import BestSoFar

TAG_RE = re.compile(r"^step(\d+)$")
RESUME_MAY_DIFFER = frozenset({"log_every", "save_every", "keep_last", "num_workers", "prefetch_factor"})
"""TrainConfig fields a resumed run may change; any other change would break the exact sequence (the
loader's fields change only where batches are made, never which or what they are)."""


@dataclass
class TrainState:
    """What a checkpoint carries besides DeepSpeed's own state (weights, optimiser, LR schedule)."""

    step: int = 0
    best: BestSoFar = field(default_factory=BestSoFar)
    stopped_early: bool = False


def checkpoint_tags(ckpt_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of the checkpoints in `ckpt_dir`, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in ckpt_dir.iterdir() if p.is_dir() and (m := TAG_RE.match(p.name))]
    return sorted(found)


def rank0_checkpoint_key(rank: int, checkout: Path | None) -> bytes | None:
    """Rank 0's checkpoint signing key (None on other ranks); a key problem (say, a key file other
    users can read) stops every rank before training, with rank 0's message."""
    key, problem = None, [None]
    if rank == 0:
        try:
            key = checkpoint_key(checkout)
        except (CheckpointIntegrityError, OSError) as err:
            problem[0] = str(err)
    dist.broadcast_object_list(problem, src=0)
    if problem[0] is not None:
        raise CheckpointIntegrityError(problem[0])
    return key


def save_checkpoint(engine: Any, sampler: WeightedMultitaskSampler, ckpt_dir: Path, rank: int, world: int,
                    key: bytes | None, config: TrainConfig, state: TrainState) -> None:
    """Save tag `step<N>` (collective), sign it on rank 0 and keep the newest `config.keep_last`."""
    # DeepSpeed writes client_state from rank 0 only, so gather every rank's sampler state.
    states: list[Any] = [None] * world
    dist.all_gather_object(states, sampler.state_dict())
    client_state = {
        "step": state.step,
        "world_size": world,
        "sampler": json.dumps(states, sort_keys=True),
        "train_config": json.dumps(config.to_dict(), sort_keys=True),
        "best": state.best.to_json(),
        "stopped_early": state.stopped_early,
    }
    tag = f"step{state.step}"
    # `latest` is written by sign_checkpoint, after the record, so it never names an unsigned tag.
    # save_checkpoint returns after a barrier: every rank's files of the tag are complete.
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    if rank == 0:
        assert key is not None
        sign_checkpoint(ckpt_dir, tag, key)
        tags = checkpoint_tags(ckpt_dir)
        for _, old in tags[: max(0, len(tags) - config.keep_last)]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    dist.barrier()


def changed_fields(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """TrainConfig fields that differ between a checkpoint's config and this run's (but for
    `RESUME_MAY_DIFFER`). A field the checkpoint predates counts as its default, which is what the
    run that wrote it did: adding a field with a behaviour-preserving default keeps old checkpoints
    resumable."""
    defaults = TrainConfig().to_dict()
    return sorted(k for k in set(saved) | set(current)
                  if k not in RESUME_MAY_DIFFER and saved.get(k, defaults.get(k)) != current.get(k))


def resume_checkpoint(engine: Any, sampler: WeightedMultitaskSampler, ckpt_dir: Path, rank: int, world: int,
                      key: bytes | None, config: TrainConfig) -> TrainState:
    """Load the latest checkpoint in `ckpt_dir` if any (a fresh TrainState when there is none).

    Rank 0 verifies the checkpoint against its signed record before any rank loads a byte of it,
    and every rank gets the same verdict (the same tag, or the same error).
    """
    verdict: list[Any] = [None, None]  # [tag to load, refusal message]
    if rank == 0 and has_checkpoint_state(ckpt_dir):
        assert key is not None
        try:
            verdict[0] = verify_checkpoint(ckpt_dir, key)
        except CheckpointIntegrityError as err:
            verdict[1] = str(err)
        except OSError as err:  # e.g. an unreadable file: still refuse on every rank, never hang them
            verdict[1] = f"cannot verify the checkpoint in {ckpt_dir}: {err}"
    dist.broadcast_object_list(verdict, src=0)
    tag, refusal = verdict
    if refusal is not None:
        raise CheckpointIntegrityError(refusal)
    if tag is None:
        return TrainState()
    try:
        with weights_only_loads():
            load_path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    except pickle.UnpicklingError as err:
        # The files verified: most likely our DeepSpeed pickled a class the loader does not allow.
        reason = next((line.split("error:", 1)[1].strip().split(". ")[0] for line in str(err).splitlines()
                       if "WeightsUnpickler error:" in line), type(err).__name__)
        raise RuntimeError(f"{ckpt_dir / tag}: DeepSpeed state the weights-only loader refuses ({reason}); "
                           "add the class to checkpoint_integrity.DEEPSPEED_STATE_CLASSES if it is a plain "
                           f"value class, or delete {ckpt_dir} to start training fresh") from None
    if load_path is None or client is None:
        raise RuntimeError(f"{ckpt_dir}: checkpoint {tag} could not be loaded by DeepSpeed")
    saved_world = int(client["world_size"])
    if saved_world != world:
        raise ValueError(f"{load_path} was written by {saved_world} processes but this run has {world}; "
                         f"resume with {saved_world} processes or use a fresh out_dir")
    saved_cfg = json.loads(client["train_config"])
    current = config.to_dict()
    changed = changed_fields(saved_cfg, current)
    if changed:
        diff = {k: (saved_cfg.get(k), current.get(k)) for k in changed}
        raise ValueError(f"cannot resume {load_path} exactly: TrainConfig changed {diff} (saved, now); "
                         f"only {sorted(RESUME_MAY_DIFFER)} may change on resume. Use a fresh out_dir.")
    sampler.load_state_dict(json.loads(client["sampler"])[rank])
    return TrainState(int(client["step"]), BestSoFar.from_json(client.get("best")),
                      bool(client.get("stopped_early", False)))
