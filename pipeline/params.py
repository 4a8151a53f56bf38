"""`params.yaml` as typed dataclasses: the single source of truth for what a pipeline run does.

Every stage reads its slice from here, so a typo in params fails at load time with the key's path and
a suggestion, instead of being silently ignored (an unknown key is an error, never a default).
The model and training sections map one to one onto the library's `ModelConfig` and `TrainConfig`,
which also makes them flat MLflow params.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ofasys.instruction import InstructionError, parse_instruction
from ofasys.strict_fields import UnknownKeyError, check_known_keys
from pipeline.sources import SourceSpec

METRICS = ("bleu4", "iou_acc", "accuracy", "token_accuracy")
"""Evaluation metrics a task can select; each comes with its trivial baseline (see `pipeline.evaluate`)."""


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key path and what would fix it."""


@dataclass(frozen=True)
class TaskParams:
    name: str
    """Task name: the `materialise@<name>` stage and the `train/loss/<name>` curve."""
    instruction: str
    """The one-line instruction, e.g. `[IMAGE:img] what does the image describe? -> [TEXT:cap]`."""
    source: SourceSpec
    """Where the raw rows come from (demo generator or a parquet/jsonl/csv file)."""
    weight: float = 1.0
    """Mixture share in the multitask sampler (normalised over tasks); ignored in temperature mode."""
    metric: str = "bleu4"
    """Evaluation metric; one of `METRICS`."""
    image_size: int = 64
    """Square resolution images are resized to at materialisation."""


@dataclass(frozen=True)
class AssetParams:
    bpe_vocab_size: int = 1000
    """Size of the text BPE vocabulary trained on the tasks' text (specials included)."""
    num_bins: int = 1000
    """Number of `<bin_i>` tokens for box coordinates."""
    num_codes: int = 0
    """Number of `<code_i>` image VQ tokens reserved in the unified vocabulary."""


@dataclass(frozen=True)
class MaterialiseParams:
    shard_samples: int = 1000
    """Samples per WebDataset shard."""
    reject_budget: float = 0.01
    """Largest fraction of a split's rows that may be rejected before the stage fails."""


@dataclass(frozen=True)
class TrackingParams:
    uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI; the default needs no server (`mlflow ui` reads it)."""
    experiment: str = "ofasys"
    """MLflow experiment name."""
    registered_model: str = "ofasys"
    """Name of the registered model the trained checkpoint becomes a version of."""


@dataclass(frozen=True)
class GenerationParams:
    """What the evaluate and infer stages share: which split to generate for, and how."""

    split: str = "test"
    """Split whose samples are generated for (from each task's shard manifest)."""
    beam_size: int = 1
    """Beam size for generation."""
    batch_size: int = 64
    """Samples per generation batch."""


@dataclass(frozen=True)
class EvaluateParams(GenerationParams):
    max_samples: int = 0
    """Evaluate at most this many samples per task (0 = all)."""


@dataclass(frozen=True)
class InferParams(GenerationParams):
    task: str = ""
    """Task whose shard manifest is read (its materialised shards)."""


@dataclass(frozen=True)
class Params:
    seed: int
    """Seed for demo data, sampling and initialisation: same params + seed, same run."""
    tasks: dict[str, TaskParams]
    assets: AssetParams = field(default_factory=AssetParams)
    materialise: MaterialiseParams = field(default_factory=MaterialiseParams)
    model: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `ofasys.model.ModelConfig` (vocab_size is filled from the vocabulary)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `ofasys.training.TrainConfig`."""
    tracking: TrackingParams = field(default_factory=TrackingParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    infer: InferParams = field(default_factory=InferParams)

    def task_hash(self, name: str) -> str:
        """Fingerprint of everything that determines a task's shards (recorded in its manifest)."""
        task = self.tasks[name]
        blob = {
            "seed": self.seed,
            # Not `weight` or `metric`: a new mixture or metric must leave the shards byte-identical.
            "task": {k: _to_plain(getattr(task, k)) for k in ("name", "instruction", "source", "image_size")},
            "assets": _to_plain(self.assets),
            "materialise": _to_plain(self.materialise),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten params into `a.b.c -> value` pairs (MLflow params)."""
    plain = _to_plain(obj)
    out: dict[str, Any] = {}
    if isinstance(plain, dict):
        for k, v in plain.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = plain
    return out


def _build(cls: type, raw: Any, path: str) -> Any:
    """Construct dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping, got {type(raw).__name__}")
    try:
        check_known_keys(cls, raw, path)
    except UnknownKeyError as err:
        raise ParamsError(str(err)) from None
    try:
        return cls(**raw)
    except (TypeError, ValueError) as err:  # missing required keys, or the dataclass's own checks
        raise ParamsError(f"{path}: {err}") from None


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Validate a params mapping (as loaded from YAML) into `Params`."""
    if not isinstance(raw, Mapping):
        raise ParamsError("params: expected a mapping at the top level")
    raw = dict(raw)
    tasks_raw = raw.pop("tasks", None)
    if not tasks_raw:
        raise ParamsError("tasks: at least one task is required")
    tasks: dict[str, TaskParams] = {}
    for name, spec in tasks_raw.items():
        if not str(name).isidentifier():
            raise ParamsError(f"tasks.{name}: task names must be identifiers (letters, digits, _)")
        spec = dict(spec or {})
        source = _build_source(spec.pop("source", None), f"tasks.{name}.source")
        task = _build(TaskParams, {"name": name, "source": source, **spec}, f"tasks.{name}")
        if task.metric not in METRICS:
            raise ParamsError(f"tasks.{name}.metric: {task.metric!r} is not one of {', '.join(METRICS)}")
        if task.weight < 0:
            raise ParamsError(f"tasks.{name}.weight: must be >= 0, got {task.weight}")
        try:  # a malformed instruction fails here, before any stage does work
            parse_instruction(task.instruction)
        except InstructionError as err:
            raise ParamsError(f"tasks.{name}.instruction: {err}") from None
        tasks[name] = task
    sections = {
        "assets": AssetParams,
        "materialise": MaterialiseParams,
        "tracking": TrackingParams,
        "evaluate": EvaluateParams,
        "infer": InferParams,
    }
    built: dict[str, Any] = {"tasks": tasks}
    for key, value in raw.items():
        if key in sections:
            built[key] = _build(sections[key], value, key)
        elif key in ("seed", "model", "train"):
            built[key] = value if value is not None else {}
        else:
            known = ["seed", "tasks", "model", "train", *sections]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known sections: {', '.join(known)}"
            raise ParamsError(f"{key}: unknown section{hint}")
    if "seed" not in built:
        raise ParamsError("seed: required (an integer)")
    params = Params(**built)
    if params.infer.task and params.infer.task not in tasks:
        raise ParamsError(f"infer.task: {params.infer.task!r} is not a task; tasks: {', '.join(tasks)}")
    return params


def _build_source(raw: Any, path: str) -> SourceSpec:
    if raw is None:
        raise ParamsError(f"{path}: required (a demo generator or a file path)")
    return _build(SourceSpec, raw, path)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`."""
    with open(path, encoding="utf-8") as fh:
        return parse_params(yaml.safe_load(fh))
