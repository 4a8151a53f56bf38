"""One readable training loop around a DeepSpeed engine (nanoGPT-style, DESIGN §6).

    sample task + indices -> task.collate -> engine(batch) = model.loss -> engine.backward -> engine.step

(reading and collating run ahead in loader workers, `loader.py`; the files were hashed once up
front, `data_check.py`).

What the loop guarantees, and how:
- Reproducible. Everything random is seeded from `config.seed`: the sampler's streams, the
  collate RNG and torch (dropout), re-seeded before each micro-batch from (seed, step, micro,
  rank). The initial weights are the model's, so build it with `ofasys.model.build_model(config,
  seed)` (or another function of a seed only): two runs of the same params then export
  byte-identical weights. DeepSpeed's initialisation draws no random numbers (and the first
  micro-batch re-seeds torch anyway).
- Exact resume. Every checkpoint holds weights, AdamW state, the LR schedule, the step and every
  rank's sampler state; since the RNGs are re-derived per micro-batch, a restarted run continues
  bit-identically without having to restore any RNG history.
- Same task on all ranks at each micro-step (the sampler's mixture RNG is shared), different
  samples per rank (sample-level split), no epoch-end hang (streams never end).
- Launch: `torchrun` / the `deepspeed` launcher (env RANK/WORLD_SIZE/LOCAL_RANK), or a plain
  `python` process (a world of 1 over gloo with an in-memory store). An already initialised
  process group is reused. Nothing listens beyond loopback on one machine (`process_group.py`
  says how, and what torchrun's own agent still does). A multi-node launch (MASTER_ADDR not a
  loopback address) must set GLOO_SOCKET_IFNAME (CPU) or NCCL_SOCKET_IFNAME (CUDA) to the
  cluster-internal interface and firewall MASTER_PORT and the gloo/NCCL ports from outside the
  cluster: the c10d store then listens on all interfaces and gloo/NCCL on the chosen one. Rank 0
  signs and verifies every rank's checkpoint files, so `out_dir` must be on a filesystem all nodes
  share, and a resume needs rank 0 on a node with the same checkpoint key (OFASYS_CHECKPOINT_KEY
  set alike everywhere is simplest).
- CPU: DS_ACCELERATOR=cpu and TORCH_EXTENSIONS_DIR are given project-local defaults before
  deepspeed is imported (SETUP.md "Known traps"); DeepSpeed's shared-memory comm op, which only
  serves inference all-reduce, is not built (saves a ~30 s C++ compile on a fresh machine).

How a step runs on its device (`train.precision`, `compile`, `activation_checkpointing`, ZeRO
offload) is decided in `acceleration.py` and `ds_config.py` and applied where the engine is made;
CPU bf16 autocasts inside the loss module's forward, so the loop itself does not change with them.

Checkpoints are DeepSpeed's torch pickles in `out_dir/ds`, signed after each save and verified
before any byte is unpickled on resume, then loaded weights-only (`checkpoints.py`). The exported
model (`export.py`) is safetensors only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ofasys.data.batch import TOKENS, Batch
from ofasys.training.acceleration import (autocast, autocast_dtype, prepare_model, resolve_precision,
                                          skip_single_rank_allreduce)
from ofasys.training.checkpoints import TrainState, rank0_checkpoint_key, resume_checkpoint, save_checkpoint
from ofasys.training.config import TrainConfig
from ofasys.training.data_check import verify_once
from ofasys.training.ds_config import build_ds_config
from ofasys.training.export import (save_pretrained, tasks_info_from_manifests,
                                    vocab_fingerprint_of_manifests)
from ofasys.training.loader import TrainLoader
from ofasys.training.meter import TaskMeter, as_float
from ofasys.training.process_group import choose_device, init_distributed
from ofasys.training.sampler import WeightedMultitaskSampler
from ofasys.training.schedule import make_scheduler
from ofasys.training.seeding import derive_seed
from ofasys.training.validation import BestSoFar, load_best_weights, save_best_weights, validation_losses

LOG = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "ds"
EXPORT_SUBDIR = "pretrained"
_TORCH_TAG = 0x544F5243  # "TORC"


class TaskData(Protocol):
    """What the trainer needs from a task (contracts: `ShardTaskData`)."""

    name: str
    lengths: np.ndarray

    def __len__(self) -> int: ...

    def get(self, i: int) -> Any: ...

    def collate(self, samples: list[Any], rng: np.random.Generator, train: bool, epoch: int | None = None) -> Batch: ...


class LossModel(Protocol):
    """What the trainer needs from a model: an nn.Module with `loss(batch, label_smoothing)`.

    `stats` may carry `ntokens`, `nll_sum` (unsmoothed) and `correct`; the per-task curves use them
    when present and fall back to the optimised loss otherwise.
    """

    def loss(self, batch: Batch, label_smoothing: float) -> tuple[torch.Tensor, Mapping[str, Any]]: ...

    def parameters(self, recurse: bool = True) -> Any: ...


@dataclass(frozen=True)
class MicroRecord:
    """One micro-batch as this rank ran it."""

    step: int
    """1-based optimizer step the micro-batch belongs to."""
    micro: int
    task: str
    loss: float
    ntokens: int
    indices: tuple[int, ...] = ()
    """Sample indices into the task (only filled with `record_samples=True`)."""


@dataclass
class TrainResult:
    """What `fit()` did on this rank."""

    step: int
    """Optimizer step reached (== config.max_steps on success)."""
    resumed_from: int | None
    """Step of the checkpoint this run resumed from, or None for a fresh start."""
    rank: int
    world_size: int
    checkpoint_dir: Path
    export_dir: Path | None
    """The exported pretrained dir (rank 0, when a vocab was given), else None."""
    init_seconds: float
    """Wall time of `deepspeed.initialize`."""
    train_seconds: float
    history: list[MicroRecord] = field(default_factory=list)
    """Micro-batches run by this call of fit() (not those before a resume)."""
    best_step: int | None = None
    """Step of the best validation (the exported weights with `export_best`); None without validation."""
    best_valid_loss: float | None = None
    stopped_early: bool = False
    """Whether training ended before max_steps because validation stopped improving."""


class _LossModule(nn.Module):
    """Makes `engine(batch)` run `model.loss`, so DeepSpeed's forward hooks wrap the real work.

    The forward is where CPU bf16 autocasts (`acceleration.autocast_dtype`), so training and
    validation steps, both `engine(batch)`, run in the same precision."""

    def __init__(self, model: nn.Module, label_smoothing: float, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.autocast_dtype = autocast_dtype

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Mapping[str, Any]]:
        with autocast(batch.decoder_input.device, self.autocast_dtype):
            return self.model.loss(batch, label_smoothing=self.label_smoothing)


# --------------------------------------------------------------------------------------------------
# process setup


def package_checkout() -> Path | None:
    """The git checkout holding this package, or None when it is installed elsewhere."""
    repo = Path(__file__).resolve().parents[2]
    return repo if (repo / ".git").exists() else None


def project_cache_root(out_dir: Path) -> Path:
    """The git checkout holding this package when there is one, else `out_dir`."""
    return package_checkout() or out_dir


def import_deepspeed(device: torch.device, cache_root: Path) -> Any:
    """Import deepspeed with the environment it needs on this machine (see module docstring)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if device.type == "cpu" else "cuda")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root / ".cache" / "torch_extensions"))
    import deepspeed
    import deepspeed.ops

    if device.type == "cpu":
        try:  # the dict is DeepSpeed's lazily probed op table; edits to it persist by design
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        except Exception:  # pragma: no cover - a DeepSpeed without the table just builds the op
            LOG.debug("could not disable DeepSpeed's shm comm op", exc_info=True)
    return deepspeed


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices / embeddings, not biases, norms or scalars (ndim < 2)."""
    decay, no_decay = [], []
    for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _batch_to(batch: Batch, device: torch.device, float_dtype: torch.dtype) -> Batch:
    """`batch` on `device`, its float inputs (fbank frames: whatever a modality collated as floats) in
    the engine's dtype; token ids, masks and uint8 pixels stay as they are (the pixel adaptors convert
    those on the device)."""
    batch = batch.to(device)
    if float_dtype != torch.float32:
        for seg in batch.segments:
            if seg.kind != TOKENS and seg.tensor.is_floating_point():
                seg.tensor = seg.tensor.to(float_dtype)
    return batch


# --------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Trains `model` on a weighted mixture of `tasks` with DeepSpeed; see the module docstring.

    `weights` are per-task mixture weights (mapping by task name or a sequence in task order; None =
    equal; ignored shares in `mixture="temperature"` mode must be uniform). `log_fn(step, metrics)`
    is called on rank 0 every `log_every` steps with `train/loss/<task>` (unsmoothed NLL per target
    token), `train/acc/<task>`, `train/loss`, `lr`, `tokens/s`, `samples/s`. Checkpoints go to
    `out_dir/ds`; with `vocab_path` the trained model is exported to `export_dir`
    (default `out_dir/pretrained`) at the end. `model_config` defaults to `model.config.to_dict()`.
    """

    def __init__(self, model: nn.Module, tasks: Sequence[TaskData],
                 weights: Mapping[str, float] | Sequence[float] | None, config: TrainConfig,
                 out_dir: str | os.PathLike, log_fn: Callable[[int, dict[str, float]], None] | None = None,
                 *, vocab_path: str | os.PathLike | None = None,
                 model_config: Mapping[str, Any] | None = None,
                 export_dir: str | os.PathLike | None = None, record_samples: bool = False,
                 valid_tasks: Sequence[TaskData] = (),
                 image_codes_path: str | os.PathLike | None = None) -> None:
        if not hasattr(model, "loss"):
            raise TypeError(f"{type(model).__name__} has no loss(batch, label_smoothing) method")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.model = model
        self.tasks = {t.name: t for t in tasks}
        self.task_list = list(tasks)
        self.weights = weights
        self.config = config
        self.out_dir = Path(out_dir)
        self.log_fn = log_fn
        self.vocab_path = None if vocab_path is None else Path(vocab_path)
        self.image_codes_path = image_codes_path
        """The VQ image tokenizer file, exported beside the weights when a task stores image codes."""
        self.manifests = {t.name: t.manifest for t in tasks if isinstance(getattr(t, "manifest", None), Mapping)}
        self.model_config: dict[str, Any] | None = None
        if self.vocab_path is not None:  # fail now, not after hours of training, if the export can't work
            from ofasys.vocab import UnifiedVocab

            fingerprint = vocab_fingerprint_of_manifests(self.manifests)
            if fingerprint is not None:
                UnifiedVocab.load(self.vocab_path).check_fingerprint(fingerprint, where="the tasks' manifests")
            self.model_config = dict(model_config) if model_config is not None else _model_config_dict(model)
        self.export_dir = Path(export_dir) if export_dir is not None else self.out_dir / EXPORT_SUBDIR
        self.record_samples = record_samples
        self.valid_tasks = list(valid_tasks)
        if config.valid_every and not self.valid_tasks:
            raise ValueError("TrainConfig.valid_every is set but no valid_tasks were given")
        self._best = BestSoFar()
        self._stopped_early = False
        self._loader: TrainLoader | None = None

    # ---------------------------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        # DeepSpeed's ZeRO-3 replaces torch.nn.functional.linear process-wide with its memory-efficient
        # version and leaves it so ("this will persist unless manually reset"); a later run in the same
        # process (a compiled one traced through that autograd Function) then trains differently.
        linear = torch.nn.functional.linear
        try:
            return self._fit()
        finally:  # the loader's workers stop with training, however it ends; torch is left as found
            torch.nn.functional.linear = linear
            if self._loader is not None:
                self._loader.close()
                self._loader = None

    def _fit(self) -> TrainResult:
        cfg = self.config
        device = choose_device()
        rank, world = init_distributed(device)
        verify_once([*self.task_list, *self.valid_tasks], rank, world, device)  # collective; before any step
        self.out_dir.mkdir(parents=True, exist_ok=True)
        deepspeed = import_deepspeed(device, project_cache_root(self.out_dir))
        ckpt_dir = self.out_dir / CHECKPOINT_SUBDIR
        key = rank0_checkpoint_key(rank, package_checkout())

        # DeepSpeed broadcasts rank 0's weights, so every rank starts from the same model.
        precision = resolve_precision(cfg.precision, device)
        wrapper = _LossModule(self.model, cfg.label_smoothing, autocast_dtype(precision, device))
        prepare_model(self.model, wrapper, cfg)  # activation checkpointing, torch.compile
        ds_config = build_ds_config(cfg, device, world)
        t0 = time.perf_counter()
        engine, _, _, _ = deepspeed.initialize(
            model=wrapper,
            model_parameters=param_groups(wrapper, cfg.weight_decay),
            config=ds_config,
            lr_scheduler=lambda opt: make_scheduler(opt, cfg),
        )
        init_seconds = time.perf_counter() - t0
        skip_single_rank_allreduce(engine, world, cfg)
        float_dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32

        sampler = WeightedMultitaskSampler.from_config(self.task_list, self.weights, cfg, rank=rank,
                                                       world_size=world)
        resumed = resume_checkpoint(engine, sampler, ckpt_dir, rank, world, key, self.config)
        step, self._best, self._stopped_early = resumed.step, resumed.best, resumed.stopped_early
        resumed_from = step if step > 0 else None
        last_saved = step if resumed_from is not None else -1
        self._loader = loader = TrainLoader(
            self.tasks, sampler, seed=cfg.seed, rank=rank, start_step=step,
            max_steps=step if self._stopped_early else cfg.max_steps, grad_accum=cfg.grad_accum,
            num_workers=cfg.num_workers, prefetch_factor=cfg.prefetch_factor, pin_memory=device.type == "cuda")

        history: list[MicroRecord] = []
        meter = TaskMeter(sampler.names)
        engine.train()
        t_train = time.perf_counter()
        while step < cfg.max_steps and not self._stopped_early:
            lr = float(engine.get_lr()[0])  # the lr this step's update uses
            for micro in range(cfg.grad_accum):
                torch.manual_seed(derive_seed(cfg.seed, step, micro, rank, _TORCH_TAG))
                picked, cpu_batch = loader.next(step, micro)  # advances `sampler` by one batch
                batch = _batch_to(cpu_batch, engine.device, float_dtype)
                loss, stats = engine(batch)
                engine.backward(loss)
                engine.step()
                loss_value = as_float(loss)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"non-finite loss {loss_value} at step {step + 1} micro {micro} "
                                             f"on task {picked.task!r} (rank {rank})")
                ntokens = int(stats.get("ntokens", batch.num_target_tokens()))
                meter.add(picked.task, loss_value, stats, ntokens, len(picked.indices),
                          int(np.sum(sampler.lengths[picked.task][list(picked.indices)])))
                history.append(MicroRecord(step + 1, micro, picked.task, loss_value, ntokens,
                                           tuple(picked.indices) if self.record_samples else ()))
            step += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                metrics = meter.reduce(world, engine.device)  # collective: every rank calls it
                metrics["lr"] = lr
                if rank == 0 and self.log_fn is not None:
                    self.log_fn(step, metrics)
            if cfg.valid_every and (step % cfg.valid_every == 0 or step == cfg.max_steps):
                self._validate(engine, float_dtype, ckpt_dir, step, rank, world)
            if cfg.save_every and step % cfg.save_every == 0:
                self._save(engine, sampler, ckpt_dir, step, rank, world, key)
                last_saved = step
        if last_saved != step:
            self._save(engine, sampler, ckpt_dir, step, rank, world, key)
        train_seconds = time.perf_counter() - t_train

        export_dir = self._export(engine, rank)
        dist.barrier()
        validated = bool(cfg.valid_every) and self._best.step >= 0
        return TrainResult(step=step, resumed_from=resumed_from, rank=rank, world_size=world,
                           checkpoint_dir=ckpt_dir, export_dir=export_dir, init_seconds=init_seconds,
                           train_seconds=train_seconds, history=history,
                           best_step=self._best.step if validated else None,
                           best_valid_loss=self._best.score if validated else None,
                           stopped_early=self._stopped_early)

    # ------------------------------------------------------------------------ validation
    def _validate(self, engine: Any, float_dtype: torch.dtype, ckpt_dir: Path, step: int, rank: int,
                  world: int) -> None:
        """Validate, keep the best weights, log `valid/*`, and decide on early stopping (every rank
        reaches the same decision: the figures are all-reduced)."""
        cfg = self.config
        engine.eval()
        metrics = validation_losses(engine, self.valid_tasks, seed=cfg.seed, max_samples=cfg.valid_samples,
                                    batch_size=cfg.max_batch_size, rank=rank, world=world,
                                    to_device=lambda b: _batch_to(b, engine.device, float_dtype),
                                    device=engine.device)
        engine.train()
        if "valid/loss" not in metrics:
            raise ValueError("validation found no target tokens in the valid splits; give each task valid rows "
                             "or set train.valid_every: 0")
        if self._best.update(step, metrics["valid/loss"], cfg.min_delta) and cfg.export_best:
            state = self._full_state(engine)
            if rank == 0:
                self._best.sha256 = save_best_weights(state, ckpt_dir)
        if cfg.early_stop_patience and self._best.stale >= cfg.early_stop_patience:
            self._stopped_early = True
        metrics["valid/best_step"] = float(self._best.step)
        if rank == 0 and self.log_fn is not None:
            self.log_fn(step, metrics)
        if self._stopped_early and rank == 0:
            LOG.info("early stop at step %d: no improvement in %d validations (best %.4f at step %d)",
                     step, self._best.stale, self._best.score, self._best.step)

    def _full_state(self, engine: Any) -> dict[str, torch.Tensor] | None:
        """The model's full state dict on rank 0 (collective under ZeRO-3, where it is sharded)."""
        if self.config.zero_stage == 3:
            full = engine._zero3_consolidated_16bit_state_dict()
            return None if full is None else {k.removeprefix("model."): v for k, v in full.items()}
        return self.model.state_dict()

    def _save(self, engine: Any, sampler: WeightedMultitaskSampler, ckpt_dir: Path, step: int,
              rank: int, world: int, key: bytes | None) -> None:
        save_checkpoint(engine, sampler, ckpt_dir, rank, world, key, self.config,
                        TrainState(step, self._best, self._stopped_early))

    # -------------------------------------------------------------------------- export
    def _export(self, engine: Any, rank: int) -> Path | None:
        if self.vocab_path is None:
            if rank == 0:
                LOG.warning("no vocab_path given: the trained model is not exported (checkpoints are in %s)",
                            self.out_dir / CHECKPOINT_SUBDIR)
            return None
        state = self._full_state(engine)  # collective under ZeRO-3
        if rank != 0:
            return None
        if self.config.valid_every and self.config.export_best and self._best.step >= 0:
            state = load_best_weights(self.out_dir / CHECKPOINT_SUBDIR, self._best)
            if self.config.zero_stage != 3:  # through the model, so tied weights stay tied in the export
                self.model.load_state_dict(state)
                state = self.model.state_dict()
            LOG.info("exporting the weights of step %d (best mean valid/loss %.4f)", self._best.step,
                     self._best.score)
        return save_pretrained(state, self.model_config or {}, self.vocab_path,
                               tasks_info_from_manifests(self.manifests), self.export_dir,
                               vocab_fingerprint=vocab_fingerprint_of_manifests(self.manifests),
                               image_codes_path=self.image_codes_path)


def _model_config_dict(model: nn.Module) -> dict[str, Any]:
    """`model.config` as a dict (its `to_dict()`, or a dataclass), else an explicit error."""
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise ValueError(f"{type(model).__name__} has no `config` dataclass; pass model_config= to Trainer "
                     "so the export records the model's shape")
