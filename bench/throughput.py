"""Training throughput and model FLOPs utilisation on this machine's device, and DeepSpeed's overhead.

Runs the project's model (`model:` of params.yaml, vocabulary from assets/vocab.json) on real
micro-batches drawn from its shards by the trainer's sampler (`train:` budgets and mixture), on CUDA
when there is one, else on the CPU, and prints:

- tokens/s: real (non-padding) encoder tokens (text, image, audio positions) plus decoder tokens.
- MFU = model FLOPs per second / the device's peak. Model FLOPs per training step:
      6 x sum over weight matrices of (parameters x positions they are applied to)
    + 12 x d_model x sum over attention layers of (queries x keys)        (per sample)
  i.e. the usual 6·N·D + attention (Kaplan et al.; PaLM appendix B), written out for an
  encoder-decoder: encoder layers see the encoder positions, decoder layers the decoder positions,
  cross-attention's key/value projection the encoder positions, the tied output projection only the
  loss positions, a modality adaptor its own output positions (exact for a patch embedding, an
  under-count for a convolutional stem). 6 = 2 (multiply-add) x 3 (forward, and a backward of twice
  the forward); attention's 12·d·Q·K is QKᵀ and AV at 2·d·Q·K each, times 3. Norms, activations and
  softmax are not counted (they are not matmuls), as usual; padded positions are, since the device
  computes them. The same step counted by `torch.utils.flop_counter` (every matmul, convolution and
  attention actually run, backward included) is printed beside it as a check: 2% apart on the demo's
  model, ~10% on the tests' tiny ones (tests/model/test_flops_formula.py), whose image stem is a
  larger share (its first convolution needs no input gradient, so 4 rather than 6 per weight use).
- peak: on CUDA from a table of dense bf16 tensor-core peaks by device name (else measured by a large
  bf16 matmul); on CPU measured by a large fp32 matmul with the threads training uses.
- `DeepSpeed step vs a plain PyTorch step`: the same model (one module object in fp32; on CUDA bf16
  an fp32 copy under bf16 autocast, as DeepSpeed keeps bf16 weights) and batches, one
  through the trainer's DeepSpeed engine (`build_ds_config`, a gloo world of 1), one through a plain
  loop (forward, backward, clip_grad_norm_, AdamW with the same groups and its own state), timed
  step by step (each batch through both, in alternating order, round after round) so background load
  hits both alike. The headline ratio is the median of the per-step ratios (robust to the spikes a
  shared machine gives a single step); the ratio of summed wall times and of the process's CPU time
  are printed beside it, with the quartiles of the per-step ratios as a measure of the noise.

    .venv/bin/python bench/throughput.py --project /path/to/a/dvc-repro-ed/project [--precision bf16]
        [--compile inductor] [--activation-checkpointing] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ofasys.data.batch import Batch  # noqa: E402
from ofasys.training.acceleration import (autocast, autocast_dtype, prepare_model, resolve_precision,  # noqa: E402
                                          skip_single_rank_allreduce)

CUDA_BF16_PEAK = {  # dense bf16 tensor-core FLOP/s from the vendors' data sheets (no sparsity)
    "H100 80GB HBM3": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H200": 989e12,
    "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "A6000": 155e12,
}
"""Matched as whole words in `torch.cuda.get_device_name()` ("A10" is not "A10G" nor "A100"); a device
not listed gets its peak measured instead."""


# ------------------------------------------------------------------------------------------- device
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """FLOP/s of the best of `reps` n x n matmuls (2·n³ FLOPs each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if precision == "bf16":
            for key, value in CUDA_BF16_PEAK.items():
                if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w])", name):
                    return value, f"{name}, data-sheet dense bf16"
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        return measured_matmul_peak(device, dtype, 8192), f"{name}, measured 8192² {dtype} matmul"
    return measured_matmul_peak(device, torch.float32, 2048), \
        f"CPU, measured 2048² fp32 matmul on {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------- the work
def load_project(project: Path, seed_offset: int = 0):
    """(model config, train config, tasks, weights) of the project at `project`, as the train stage
    builds them."""
    from ofasys.data.task_data import ShardTaskData
    from ofasys.vocab import UnifiedVocab
    from pipeline import run_config
    from pipeline.params import load_params

    params = load_params(project / "params.yaml")
    vocab = UnifiedVocab.load(project / "assets" / "vocab.json")
    tasks = [ShardTaskData(project / "data" / "shards" / name / "manifest.json", "train", vocab)
             for name in params.tasks]
    weights = {name: t.weight for name, t in params.tasks.items()}
    return run_config.model_config(params, vocab.size), run_config.train_config(params), tasks, weights


def draw_batches(tasks, weights, train_config, count: int) -> list[Batch]:
    """`count` training micro-batches exactly as the trainer's sampler and collate cut them."""
    from ofasys.training.sampler import WeightedMultitaskSampler

    sampler = WeightedMultitaskSampler.from_config(tasks, weights, train_config)
    by_name = {t.name: t for t in tasks}
    out = []
    for i in range(count):
        picked = sampler.next_batch()
        task = by_name[picked.task]
        rng = np.random.default_rng([train_config.seed, i])
        out.append(task.collate([task.get(j) for j in picked.indices], rng, True, epoch=picked.epoch))
    return out


def real_tokens(model, batch: Batch, pad_id: int) -> int:
    """Non-padding encoder positions, as the model's encoder counts them (an image is its grid of
    patches, not its pixel tensor's first dimensions), plus non-padding decoder inputs."""
    with torch.no_grad():
        _, mask = model.encode(batch)
    return int(mask.sum()) + int((batch.decoder_input != pad_id).sum())


def count_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def analytic_flops(model, batch: Batch) -> float:
    """Model FLOPs of one training step on `batch` (module docstring: 6·N·D + attention)."""
    config = model.config
    adaptor_positions: dict[str, int] = {}
    hooks = [adaptor.register_forward_hook(
        lambda m, i, out, name=name: adaptor_positions.__setitem__(
            name, adaptor_positions.get(name, 0) + int(np.prod(out[0].shape[:2]))))
        for name, adaptor in model.adaptors.items()]
    try:
        with torch.no_grad():
            _, mask = model.encode(batch)
    finally:
        for h in hooks:
            h.remove()
    b, s = mask.shape
    t = batch.decoder_input.shape[1]
    loss_positions = int(batch.loss_mask.sum())
    cross_kv = count_params(*(layer.cross_attn.attn.kv_proj for layer in model.decoder_layers))
    matmul = (count_params(model.encoder_layers) * b * s
              + (count_params(model.decoder_layers) - cross_kv) * b * t
              + cross_kv * b * s
              + config.vocab_size * config.d_model * loss_positions
              + sum(count_params(model.adaptors[name]) * n for name, n in adaptor_positions.items()))
    attention = 12 * config.d_model * b * (config.encoder_layers * s * s + config.decoder_layers * (t * t + t * s))
    return 6 * matmul + attention


def counted_flops(model, batch: Batch, label_smoothing: float) -> float:
    """FLOPs of one forward+backward as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.loss(batch, label_smoothing)
        loss.backward()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------- steps
class PlainStep:
    """forward, backward, clip, AdamW: the step DeepSpeed's engine does, without DeepSpeed."""

    def __init__(self, model, train_config, device, precision):
        from ofasys.training.trainer import param_groups

        self.model, self.cfg = model.to(device).train(), train_config
        self.opt = torch.optim.AdamW(param_groups(model, train_config.weight_decay), lr=train_config.lr,
                                     betas=train_config.adam_betas, eps=train_config.adam_eps)
        # DeepSpeed's CUDA bf16 keeps bf16 weights; the plain step's equivalent is bf16 autocast.
        dtype = torch.bfloat16 if precision == "bf16" else None
        self.autocast = lambda: autocast(device, dtype)

    def __call__(self, batch: Batch) -> None:
        with self.autocast():
            loss, _ = self.model.loss(batch, self.cfg.label_smoothing)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class EngineStep:
    """The trainer's step: `engine(batch)` (its loss module, autocast included), backward, step."""

    def __init__(self, model, train_config, device, precision):
        from ofasys.training.ds_config import build_ds_config
        from ofasys.training.trainer import _LossModule, import_deepspeed, param_groups, project_cache_root

        deepspeed = import_deepspeed(device, project_cache_root(REPO))
        wrapper = _LossModule(model, train_config.label_smoothing, autocast_dtype(precision, device))
        prepare_model(model, wrapper, train_config)
        with contextlib.redirect_stdout(sys.stderr):
            self.engine, *_ = deepspeed.initialize(
                model=wrapper, model_parameters=param_groups(wrapper, train_config.weight_decay),
                config=build_ds_config(train_config, device, 1))
        skip_single_rank_allreduce(self.engine, 1, train_config)  # as the trainer does
        self.engine.train()
        self.float_dtype = torch.bfloat16 if self.engine.bfloat16_enabled() else torch.float32

    def __call__(self, batch: Batch) -> None:
        loss, _ = self.engine(batch)
        self.engine.backward(loss)
        self.engine.step()


def to_device(batch: Batch, device: torch.device, float_dtype: torch.dtype) -> Batch:
    from ofasys.training.trainer import _batch_to

    return _batch_to(copy.deepcopy(batch), device, float_dtype)


def timed(step, batch: Batch, device: torch.device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one step on `batch`, the device synchronised
    before and after. CPU seconds barely move with other processes' load, wall seconds do."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    step(batch)
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."),
                        help="a project dir after `dvc repro` (params.yaml, assets/, data/shards/)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="override train.precision")
    parser.add_argument("--batches", type=int, default=12, help="distinct micro-batches (one round)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over them, each step interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--compile", choices=("inductor", "aot_eager", "eager"), default=None,
                        help="override train.compile (true, with this backend)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="override train.activation_checkpointing (true)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ofasys.model import build_model
    from ofasys.training.process_group import choose_device, init_distributed

    device = choose_device()
    init_distributed(device)
    model_config, train_config, tasks, weights = load_project(args.project)
    # One micro-batch per optimizer step, so every timed step is a whole DeepSpeed step.
    overrides = {"grad_accum": 1}
    if args.precision:
        overrides["precision"] = args.precision
    if args.compile:
        overrides.update(compile=True, compile_backend=args.compile)
    if args.activation_checkpointing:
        overrides["activation_checkpointing"] = True
    train_config = replace(train_config, **overrides)
    precision = resolve_precision(train_config.precision, device)
    batches = draw_batches(tasks, weights, train_config, args.batches)
    model = build_model(model_config, train_config.seed)
    params = count_params(model)

    # In fp32 both steps train the very same module (its weights in the same memory: two copies of a
    # model timed side by side differed by up to 15% on this CPU with identical code), each with its
    # own optimizer state; each step leaves the gradients cleared for the other. DeepSpeed's CUDA bf16
    # holds bf16 weights, so there the plain step gets an fp32 copy under bf16 autocast instead.
    engine_step = EngineStep(copy.deepcopy(model), train_config, device, precision)
    engine_batches = [to_device(b, device, engine_step.float_dtype) for b in batches]
    if engine_step.float_dtype == torch.float32:
        plain_step = PlainStep(engine_step.engine.module.model, train_config, device, precision)
        plain_batches = engine_batches
    else:
        plain_step = PlainStep(copy.deepcopy(model), train_config, device, precision)
        plain_batches = [to_device(b, device, torch.float32) for b in batches]

    ref = model.to(device).train()
    flops_analytic = sum(analytic_flops(ref, b) for b in plain_batches)
    flops_counted = sum(counted_flops(ref, b, train_config.label_smoothing) for b in plain_batches)
    tokens = sum(real_tokens(ref, b, model_config.pad_id) for b in plain_batches)

    for eb, pb in zip(engine_batches, plain_batches):  # warm up both (allocator, compile, first steps)
        timed(engine_step, eb, device), timed(plain_step, pb, device)
    # Interleaved per step: each batch runs through both (in alternating order), round after round, so
    # load from other processes hits both alike; the ratio is of the summed step times. The
    # peak matmul is measured between rounds too, so MFU compares like with like on a shared machine.
    seconds: dict[str, float] = {"deepspeed": 0.0, "plain": 0.0}
    cpu_seconds: dict[str, float] = {"deepspeed": 0.0, "plain": 0.0}
    ratios, peaks = [], []
    for _ in range(args.rounds):
        for i, (eb, pb) in enumerate(zip(engine_batches, plain_batches)):
            if i % 2:  # alternate which goes first, so neither always inherits the other's cache state
                plain_t, ds_t = timed(plain_step, pb, device), timed(engine_step, eb, device)
            else:
                ds_t, plain_t = timed(engine_step, eb, device), timed(plain_step, pb, device)
            for name, (wall, cpu) in (("deepspeed", ds_t), ("plain", plain_t)):
                seconds[name] += wall
                cpu_seconds[name] += cpu
            ratios.append(ds_t[0] / plain_t[0])
        peak, peak_source = peak_flops(device, precision)
        peaks.append(peak)
    peak = statistics.median(peaks)
    steps = args.rounds * args.batches
    ds_s, plain_s = seconds["deepspeed"] / args.rounds, seconds["plain"] / args.rounds  # per pass over the batches

    print(f"device: {device} ({peak_source}), precision {precision}, compile {train_config.compile}, "
          f"activation checkpointing {train_config.activation_checkpointing}")
    print(f"model: {params / 1e6:.2f}M parameters, d_model {model_config.d_model}, "
          f"{model_config.encoder_layers}+{model_config.decoder_layers} layers; {args.batches} real micro-batches "
          f"of {', '.join(sorted({b.task for b in batches}))}: {tokens} tokens")
    print(f"model FLOPs per {args.batches} steps: analytic 6·N·D+attention {flops_analytic:.3e}, "
          f"counted by FlopCounterMode {flops_counted:.3e} (ratio {flops_counted / flops_analytic:.2f})")
    print(f"peak: {peak:.3e} FLOP/s")
    for name, per_pass in (("DeepSpeed", ds_s), ("plain PyTorch", plain_s)):
        print(f"{name:>13}: {tokens / per_pass:,.0f} tokens/s, {args.batches / per_pass:.2f} steps/s, "
              f"MFU {flops_analytic / per_pass / peak:.2%} (counted FLOPs: {flops_counted / per_pass / peak:.2%})")
    print(f"(over {steps} steps each: wall DeepSpeed {seconds['deepspeed']:.1f} s, plain {seconds['plain']:.1f} s, "
          f"ratio {ds_s / plain_s:.3f}x; process CPU time DeepSpeed {cpu_seconds['deepspeed']:.1f} s, plain "
          f"{cpu_seconds['plain']:.1f} s, ratio {cpu_seconds['deepspeed'] / cpu_seconds['plain']:.3f}x; per-step "
          f"ratios quartiles {' / '.join(f'{q:.2f}' for q in statistics.quantiles(ratios, n=4))})")
    print(f"DeepSpeed step vs a plain PyTorch step, same model and batch: {statistics.median(ratios):.3f}x "
          f"(goal <= 1.05x)")


if __name__ == "__main__":
    main()
