"""Training hyper-parameters: the single source of truth for the `train:` section of params.yaml.

A frozen dataclass with a docstring under each field (litgpt style): it maps one-to-one onto
params, onto flattened MLflow params and onto the DeepSpeed config (`ds_config.build_ds_config`),
so nothing has to be kept in sync by hand. Defaults are the CPU demo's calibration
(SETUP.md "Calibration"): AdamW wd 0.01, 200 warmup steps then cosine, label smoothing 0.1, peak
lr 2e-3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ofasys.strict_fields import from_mapping

MIXTURES = ("weight", "temperature")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager", "cudagraphs")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OFFLOAD_DEVICES = ("none", "cpu")


@dataclass(frozen=True)
class TrainConfig:
    """How the universal model is optimised and how the multitask stream is mixed (DESIGN §5, §6)."""

    max_steps: int = 2000
    """Optimizer steps to train for. One step = `grad_accum` micro-batches; the LR schedule's
    cosine spans exactly this many steps, so changing it changes the whole schedule."""

    max_tokens: int = 4096
    """Token budget per micro-batch per rank, on each side of the model: batch_size x the longest
    encoder sequence <= this, and batch_size x the longest decoder input <= this. The lengths are the
    positions a sample really occupies (prompt and specials, image patches, audio frames; the lengths
    files materialisation writes), so this bounds the padded activations, and so memory, of a step.
    A budget (not a fixed batch size) keeps memory flat across tasks of very different lengths."""

    max_batch_size: int = 64
    """Upper bound on samples per micro-batch, whatever the token budget allows (short samples
    would otherwise make huge batches). Also DeepSpeed's `train_micro_batch_size_per_gpu`."""

    pool_size: int = 1024
    """Samples pulled per task into one bucketing pool. The pool is sorted by length and cut into
    budget-sized batches whose order is then shuffled: bigger pools pad less but mix less."""

    lr: float = 2e-3
    """Peak learning rate, reached at the end of warmup."""

    warmup_steps: int = 200
    """Linear warmup from ~0 to `lr`. Without it the tiny CPU model diverges early on some tasks."""

    min_lr_ratio: float = 0.0
    """Floor of the cosine decay as a fraction of `lr` (the lr at `max_steps`)."""

    weight_decay: float = 0.01
    """AdamW decoupled weight decay, applied to matrices only (not biases, norms, scalars)."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""

    adam_eps: float = 1e-8
    """AdamW epsilon."""

    label_smoothing: float = 0.1
    """Label smoothing passed to `model.loss`; it regularises the shared output projection."""

    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (DeepSpeed `gradient_accumulation_steps`).
    Each micro-batch draws its own task, so one step mixes tasks. For multitask training this is
    more than a memory knob: with one task per *update*, Adam moves the shared weights as far on
    every other task's step as on this one's, and a task that needs slow feature learning drowns
    (the demo's captioning learned digit identity only with 4 micro-batches per update)."""

    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3. 0 is plain data parallel; 1/2/3 shard optimizer state,
    gradients, parameters across ranks (only worth it when a model does not fit)."""

    # ---- device, precision and memory: how a step runs, not what it computes -------------------
    precision: str = "auto"
    """Arithmetic of the forward and backward: "fp32", "bf16", or "auto" (bf16 on a CUDA device that
    supports it, else fp32). bf16 on CUDA is DeepSpeed's bf16 mode (bf16 weights and activations, fp32
    master weights and optimizer state); on CPU it is `torch.autocast("cpu", bfloat16)` around the
    forward, weights staying fp32. "auto" keeps the CPU demo in fp32: CPU bf16 only pays on CPUs with
    native bf16 matmuls, and its loss curve is not the one the demo was calibrated on."""

    compile: bool = False
    """`torch.compile` the model: each encoder and decoder layer for a model that offers
    `compile_layers` (the universal model), else the whole loss. Per layer, because a layer only sees
    tensors, so it compiles once per layer kind without graph breaks, whatever the task's segments.
    Not with zero_stage 3 (refused: its partitioned parameters and compiled layers train wrong)."""

    compile_backend: str = "inductor"
    """torch.compile backend: "inductor" (generates kernels; needs a C++ compiler on CPU, Triton on
    CUDA), "aot_eager" / "eager" (no code generation: to check a model traces), "cudagraphs"."""

    compile_mode: str = "default"
    """torch.compile mode ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs").
    The modes with CUDA graphs want fixed shapes, which token-budget batches are not: "default" is the
    one that suits this trainer."""

    activation_checkpointing: bool = False
    """Recompute each encoder / decoder layer's activations in the backward instead of keeping them
    (`torch.utils.checkpoint`, non-reentrant): about a third more compute for keeping only each
    layer's input (plus one layer's intermediates at a time), which is what lets a bigger model or
    batch fit. Gradients are unchanged
    (dropout is replayed with the same random state)."""

    offload_optimizer: str = "none"
    """ZeRO-Offload of the optimizer state and step to host memory: "none" or "cpu". Needs
    zero_stage >= 1 (the optimizer state must be DeepSpeed's partitioned one). The step runs torch's
    AdamW on the host (DeepSpeed's CPU Adam would need a 75-90 s C++ build)."""

    offload_params: str = "none"
    """ZeRO-Infinity parameter offload to host memory: "none" or "cpu". Needs zero_stage 3 (only
    stage 3 partitions the parameters it could move)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""

    seed: int = 0
    """Seed of everything random: the task mixture, epoch permutations, bucketing, stream-time
    masking and dropout. torch is re-seeded per step from (seed, step, rank), so a resumed run
    does not depend on RNG history."""

    log_every: int = 10
    """Report metrics through `log_fn` every this many optimizer steps (rank 0 only)."""

    save_every: int = 500
    """Save a DeepSpeed checkpoint (weights, optimizer, schedule, sampler state) every this many
    optimizer steps; one is also saved at the end. 0 saves only at the end."""

    keep_last: int = 2
    """How many of the newest checkpoints to keep; older ones are deleted after each save."""

    mixture: str = "weight"
    """How task probabilities are set: "weight" (p proportional to each task's weight) or
    "temperature" (p proportional to n_task ** (1 / temperature) over the train split sizes,
    ignoring weights)."""

    temperature: float = 1.0
    """Temperature of the "temperature" mixture: 1 samples proportionally to task size, larger
    values flatten towards uniform (T2 / T5 mixing in T5/mT5 style)."""

    valid_every: int = 0
    """Validate on each task's valid split every this many updates, and after the last (0 = never):
    per-task `valid/loss/<task>` curves, and the mean over tasks selects the exported weights."""

    valid_samples: int = 200
    """Valid samples per task in each validation (the first ones in index order; 0 = all)."""

    export_best: bool = True
    """With validation on: export the weights of the best validation (lowest mean `valid/loss`)
    rather than the last ones."""

    early_stop_patience: int = 0
    """Stop after this many validations in a row without improvement (0 = never stop early)."""

    min_delta: float = 0.0
    """A validation improves on the best only by more than this (loss units)."""

    num_workers: int = 0
    """Loader worker processes that read and collate micro-batches ahead of the step (0 = on the
    training thread). A batch is a function of (seed, step, micro, rank) only, so this changes speed,
    never a loss. 0 for the CPU demo: on 2 cores that torch's two threads keep busy, a worker's
    collate preempts a training thread and stalls the other at its next sync, which measured a
    1.2-1.3x step vs 1.09x collating inline (bench/loader.py). Set 2 where cores are to spare or a
    GPU does the step (the workers are then far ahead and the step never waits for a batch)."""

    prefetch_factor: int = 2
    """Micro-batches each worker keeps ready (the loader runs num_workers x this ahead). Memory
    grows with it; 2 hides the jitter between tasks of different decode cost."""

    def __post_init__(self) -> None:
        positive = ("max_steps", "max_tokens", "max_batch_size", "pool_size", "grad_accum",
                    "log_every", "keep_last", "prefetch_factor")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "weight_decay", "grad_clip", "label_smoothing", "seed",
                     "valid_every", "valid_samples", "early_stop_patience", "min_delta", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"TrainConfig.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        self._check_acceleration()
        if self.mixture not in MIXTURES:
            raise ValueError(f"TrainConfig.mixture={self.mixture!r}; expected one of {MIXTURES}")
        if self.early_stop_patience and not self.valid_every:
            raise ValueError("TrainConfig.early_stop_patience needs validation: set valid_every > 0")
        if not self.temperature > 0:
            raise ValueError(f"TrainConfig.temperature must be positive, got {self.temperature}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"TrainConfig.adam_betas must be two values in [0, 1), got {self.adam_betas}")
        # YAML gives lists; keep the frozen instance hashable and its repr stable.
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))

    def _check_acceleration(self) -> None:
        """The precision / compile / checkpointing / offload fields: choices and the ZeRO combinations
        DeepSpeed supports (refused here, at params load, rather than inside `deepspeed.initialize`)."""
        for name, choices in (("precision", PRECISIONS), ("compile_backend", COMPILE_BACKENDS),
                              ("compile_mode", COMPILE_MODES), ("offload_optimizer", OFFLOAD_DEVICES),
                              ("offload_params", OFFLOAD_DEVICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected one of {choices}")
        if self.offload_optimizer != "none" and self.zero_stage < 1:
            raise ValueError(f"TrainConfig.offload_optimizer={self.offload_optimizer!r} needs ZeRO: set "
                             f"zero_stage to 1, 2 or 3, or offload_optimizer: none")
        if self.offload_params != "none" and self.zero_stage != 3:
            raise ValueError(f"TrainConfig.offload_params={self.offload_params!r} needs zero_stage 3 (got "
                             f"{self.zero_stage}): set zero_stage: 3, or offload_params: none")
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ValueError(f"TrainConfig.compile_mode={self.compile_mode!r} is an inductor mode: set "
                             f"compile_backend: inductor, or compile_mode: default")
        if self.compile and self.zero_stage == 3:
            # ZeRO-3 swaps each layer's parameters between full tensors and empty shards around its
            # forward; compiled layers then recompile until dynamo gives up, and the losses left the
            # uncompiled run's from the second update on (aot_eager, DeepSpeed 0.19, torch 2.11).
            raise ValueError("TrainConfig.compile=True does not work with zero_stage 3 (compiled layers see "
                             "ZeRO-3's partitioned parameters): set compile: false or zero_stage <= 2")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (MLflow params, checkpoint metadata)."""
        out = asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are an error naming the known ones (no silent typos)."""
        return from_mapping(cls, data)
