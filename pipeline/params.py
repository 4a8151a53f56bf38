"""`params.yaml` as typed dataclasses: the single source of truth for what a pipeline run does.

Every stage reads its slice from here, so a typo in params fails at load time with the key's path and
a suggestion, instead of being silently ignored (an unknown key is an error, never a default).
The model and training sections map one to one onto the library's `ModelConfig` and `TrainConfig`,
which also makes them flat MLflow params.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ofasys.data.members import plan_members
from ofasys.instruction import InstructionError, parse_instruction
from ofasys.metrics.registry import METRICS
from ofasys.strict_fields import FieldTypeError, UnknownKeyError, check_field_types, check_known_keys
from pipeline.sources import SourceSpec

class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key path and what would fix it."""


SPLIT_NAMES = ("train", "valid", "test")


def _require(ok: bool, message: str) -> None:
    """Raise the ValueError a field's range check gives (prefixed with its key path by `_build`)."""
    if not ok:
        raise ValueError(message)


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

    def __post_init__(self) -> None:
        _require(self.weight >= 0, f"weight: must be >= 0, got {self.weight}")
        _require(self.metric in METRICS, f"metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        _require(1 <= self.image_size <= 4096, f"image_size: must be between 1 and 4096 pixels, got {self.image_size}")


@dataclass(frozen=True)
class VQParams:
    """`assets.vq`: the VQ image tokenizer IMAGE slots with `preprocess=image_vqgan` are coded with.

    Besides `tasks` and `path`, its keys are `ofasys.vq_config.VQConfig`'s (image_size, grid,
    codebook_size, steps, ...; its seed is the top-level one), checked at load by building it. The
    `vq` stage trains on the train-split images of `tasks`, or, with `path`, checks and uses a local
    VQ file instead (then the shape keys are the file's: any given must agree with it)."""

    tasks: tuple[str, ...] | None = None
    """The tasks whose train images the tokenizer learns (any IMAGE column of theirs); absent = the
    tasks with a `preprocess=image_vqgan` slot. Pinned like `vocab_tasks`: adding another task does
    not retrain it, nor re-code every task's images."""
    path: str = ""
    """A local VQ file (`ofasys.vq.save_vq` format, safetensors) to use instead of training one."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The VQConfig keys written in params (defaults for the rest)."""

    SHAPE_FIELDS = ("image_size", "grid", "codebook_size", "code_dim", "channels")

    def __post_init__(self) -> None:
        if self.tasks is not None:
            _require(len(set(self.tasks)) == len(self.tasks), "tasks: a task is listed twice")
        self.config(0)  # the tokenizer's own checks, with its field names

    def config(self, seed: int):
        """The `ofasys.vq_config.VQConfig` the vq stage trains with."""
        from ofasys.vq_config import VQConfig

        return VQConfig(seed=seed, **self.settings)


def _build_vq(raw: Any) -> VQParams:
    """`assets.vq`: `tasks` and `path`, the rest VQConfig's keys (typed and range-checked by it)."""
    from ofasys.vq_config import VQConfig

    raw = dict(_mapping(raw, "assets.vq"))
    if "seed" in raw:
        raise ParamsError("assets.vq.seed: the VQ tokenizer is seeded by the top-level `seed:`; remove it")
    own = {k: raw.pop(k) for k in ("tasks", "path") if k in raw}
    try:
        check_known_keys(VQConfig, {**raw, **own}, "assets.vq", extra=("tasks", "path"))
        check_field_types(VQConfig, raw, "assets.vq")
    except (UnknownKeyError, FieldTypeError) as err:
        raise ParamsError(str(err)) from None
    return _build(VQParams, {**own, "settings": raw}, "assets.vq")


@dataclass(frozen=True)
class AssetParams:
    bpe_vocab_size: int = 1000
    """Size of the text BPE vocabulary trained on the tasks' text (specials included); at least
    261: a byte-level BPE holds the 5 special tokens and all 256 bytes before any merge."""
    num_bins: int = 1000
    """Number of `<bin_i>` tokens for box coordinates (at least 2: a box needs two distinct edges)."""
    num_codes: int = 0
    """Number of `<code_i>` image VQ tokens reserved in the unified vocabulary."""
    vocab_tasks: tuple[str, ...] | None = None
    """The tasks whose train text the BPE is trained on, and whose phones fill the phone block (absent
    = every task). Pin it to keep the vocabulary, and so every other task's shards, unchanged when a
    task is added: byte-level BPE encodes any new text, and changing this list is how a rebuild is
    asked for."""
    vq: VQParams | None = None
    """The VQ image tokenizer (`assets.vq`), for tasks that store images as codes; None = none."""

    def __post_init__(self) -> None:
        if self.vocab_tasks is not None:
            _require(len(self.vocab_tasks) > 0, "vocab_tasks: an empty list would train a byte-only BPE; "
                                                "list the tasks whose text the vocabulary learns, or leave it out")
            _require(len(set(self.vocab_tasks)) == len(self.vocab_tasks), "vocab_tasks: a task is listed twice")
        _require(self.bpe_vocab_size >= 261, f"bpe_vocab_size: must be >= 261 (5 specials + 256 bytes), "
                                             f"got {self.bpe_vocab_size}")
        _require(self.num_bins >= 2, f"num_bins: must be >= 2, got {self.num_bins}")
        _require(self.num_codes >= 0, f"num_codes: must be >= 0, got {self.num_codes}")


@dataclass(frozen=True)
class MaterialiseParams:
    shard_samples: int = 1000
    """Samples per WebDataset shard."""
    reject_budget: float | dict[str, Any] = 0.01
    """Largest share of a split's rows that may be rejected before the stage fails: a fraction in
    [0, 1], or `{max_fraction: 0.01, max_count: 5}` (a split passes within either allowance). A bare
    number is always a fraction, so `5` is an error rather than silently meaning five rows."""
    num_workers: int = 1
    """Processes decoding a task's rows (images, audio features) while one writes them in row order:
    the shards are byte-identical for any value, so it is not part of what re-runs the stage. Up to
    the free cores; 1 decodes in the stage's own process."""

    OUTPUT_NEUTRAL = ("num_workers",)
    """Keys that change how fast the shards are made, never their bytes."""

    def __post_init__(self) -> None:
        _require(self.shard_samples >= 1, f"shard_samples: must be >= 1, got {self.shard_samples}")
        _require(self.num_workers >= 1, f"num_workers: must be >= 1 (processes decoding rows), got {self.num_workers}")
        budget = self.reject_budget
        if isinstance(budget, Mapping):
            check_known_keys(_BudgetFields, budget, "reject_budget")
            check_field_types(_BudgetFields, budget, "reject_budget")
            _BudgetFields(**budget)
        else:
            _require(0 <= budget <= 1, f"reject_budget: {budget} is read as a fraction of a split's rows and must "
                                       f"be in [0, 1]; for a number of rows write reject_budget: {{max_count: {budget}}}")


def shards_params(params: MaterialiseParams) -> dict[str, Any]:
    """The `materialise:` keys the shards' bytes depend on (what stage inputs and the manifest's
    params hash record): all but `MaterialiseParams.OUTPUT_NEUTRAL`."""
    return {k: v for k, v in to_plain(params).items() if k not in MaterialiseParams.OUTPUT_NEUTRAL}


@dataclass(frozen=True)
class _BudgetFields:
    """The mapping form of `reject_budget` (the fields of `ofasys.data.rejects.RejectBudget`)."""

    max_fraction: float | None = None
    """Fraction of a split's rows, in [0, 1]."""
    max_count: int | None = None
    """Number of rows."""

    def __post_init__(self) -> None:
        if self.max_fraction is not None:
            _require(0 <= self.max_fraction <= 1, f"max_fraction: must be in [0, 1], got {self.max_fraction}")
        if self.max_count is not None:
            _require(self.max_count >= 0, f"max_count: must be >= 0, got {self.max_count}")


@dataclass(frozen=True)
class TrackingParams:
    uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI; the default needs no server (`mlflow ui` reads it). A relative sqlite
    path is relative to the project directory, where the stages run."""
    experiment: str = "ofasys"
    """MLflow experiment name."""
    registered_model: str = "ofasys"
    """Name of the registered model the trained checkpoint becomes a version of."""
    run_label: str = ""
    """Appended to the MLflow run name and tagged `run_label` (e.g. `specialist caption`), to tell
    runs of one experiment apart in `mlflow ui` beyond their DVC experiment name."""

    def __post_init__(self) -> None:
        for name in ("uri", "experiment", "registered_model"):
            _require(bool(getattr(self, name).strip()), f"{name}: must not be empty")


@dataclass(frozen=True)
class GenerationParams:
    """What the evaluate and infer stages share: which split to generate for, and how."""

    split: str = "test"
    """Split whose samples are generated for (from each task's shard manifest)."""
    beam_size: int = 1
    """Beam size for generation."""
    batch_size: int = 64
    """Samples per generation batch."""

    def __post_init__(self) -> None:
        _require(self.split in SPLIT_NAMES, f"split: {self.split!r} is not one of {', '.join(SPLIT_NAMES)}")
        _require(self.beam_size >= 1, f"beam_size: must be >= 1, got {self.beam_size}")
        _require(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class EvaluateParams(GenerationParams):
    max_samples: int = 0
    """Evaluate at most this many samples per task (0 = all)."""
    tolerance: float = 0.02
    """Promotion rule (`pipeline.selection`): the share of the champion's gain over its baseline a
    task may lose before it counts as a regression, and must gain to count as an improvement."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.max_samples >= 0, f"max_samples: must be >= 0 (0 = all), got {self.max_samples}")
        _require(0.0 <= self.tolerance < 1.0, f"tolerance: must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class InferParams(GenerationParams):
    tasks: tuple[str, ...] = ()
    """Tasks whose shard manifests the infer stage predicts over, each into predictions/<task>.parquet
    (empty = every task)."""


@dataclass(frozen=True)
class Params:
    seed: int
    """Seed for demo data, sampling and initialisation: same params + seed, same run."""
    tasks: dict[str, TaskParams]
    assets: AssetParams = field(default_factory=AssetParams)
    materialise: MaterialiseParams = field(default_factory=MaterialiseParams)
    model: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `ofasys.model.ModelConfig` plus an optional `preset` (vocab_size is
    filled from the vocabulary). Checked at load by building the config."""
    train: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `ofasys.training.TrainConfig` (its seed is the top-level `seed`).
    Checked at load by building the config."""
    tracking: TrackingParams = field(default_factory=TrackingParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    infer: InferParams = field(default_factory=InferParams)

    def vocab_task_names(self) -> tuple[str, ...]:
        """The tasks the vocabulary is built from (`assets.vocab_tasks`, every task when absent).
        The `vocab_text` and `assets` slices record its answer, so their stages may call it freely."""
        return tuple(self.assets.vocab_tasks if self.assets.vocab_tasks is not None else self.tasks)


def to_plain(obj: Any) -> Any:
    """Dataclasses, mappings and sequences as plain JSON-able dicts and lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten params into `a.b.c -> value` pairs (MLflow params)."""
    plain = to_plain(obj)
    out: dict[str, Any] = {}
    if isinstance(plain, dict):
        for k, v in plain.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = plain
    return out


def _build(cls: type, raw: Any, path: str) -> Any:
    """Construct dataclass `cls` from a mapping: unknown keys get a suggestion, values are checked
    against their annotations, then the dataclass checks its ranges; every error names its key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    try:
        check_known_keys(cls, raw, path)
        check_field_types(cls, raw, path)
    except (UnknownKeyError, FieldTypeError) as err:
        raise ParamsError(str(err)) from None
    try:
        return cls(**raw)
    except TypeError as err:  # a required key is missing
        missing = re.findall(r"'(\w+)'", str(err))
        raise ParamsError(f"{path}.{missing[0] if missing else '?'}: required") from None
    except ValueError as err:  # the dataclass's own range checks name their field first
        message = str(err)
        if path.endswith(".source") and message.startswith("source."):  # SourceSpec names its own keys
            message = message.removeprefix("source.")
        raise ParamsError(f"{path}.{message}" if re.match(r"^[\w.]+: ", message) else f"{path}: {message}") from None


def _check_model(section: Any) -> dict[str, Any]:
    """`model:` is ModelConfig's fields plus `preset`; build it once (placeholder vocab) to check it."""
    from ofasys.model.config import PRESETS, ModelConfig

    section = dict(_mapping(section, "model"))
    if "vocab_size" in section:
        raise ParamsError("model.vocab_size: set from the unified vocabulary (assets stage); remove it "
                          "(the vocabulary's size is controlled by assets.bpe_vocab_size and num_bins)")
    from ofasys.model.config import upgrade_legacy_keys

    fields = upgrade_legacy_keys(section)
    preset = fields.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known presets: {', '.join(PRESETS)}"
        raise ParamsError(f"model.preset: unknown preset {preset!r}; {hint}")
    try:
        check_known_keys(ModelConfig, fields, "model")
        check_field_types(ModelConfig, fields, "model")
        base = PRESETS[preset] if preset else ModelConfig()
        dataclasses.replace(base, **fields)
        for key, what in (("adaptors", "adaptor"), ("output_heads", "output head")):
            for name, raw in dict(fields.get(key) or {}).items():
                if not isinstance(raw, Mapping):
                    raise ParamsError(f"model.{key}.{name}: must be a mapping of that {what}'s settings, got {raw!r}")
    except (UnknownKeyError, FieldTypeError) as err:
        raise ParamsError(str(err)) from None
    except ValueError as err:
        raise ParamsError(f"model: {err}") from None
    return section


def _check_train(section: Any, seed: int) -> dict[str, Any]:
    """`train:` is TrainConfig's fields; the seed is the top-level one, so `train.seed` is refused."""
    from ofasys.training.config import TrainConfig

    section = dict(_mapping(section, "train"))
    if "seed" in section:
        raise ParamsError("train.seed: the run's seed is the top-level `seed:`; remove train.seed")
    try:
        check_known_keys(TrainConfig, section, "train")
        check_field_types(TrainConfig, section, "train")
        TrainConfig(seed=seed, **section)
    except (UnknownKeyError, FieldTypeError) as err:
        raise ParamsError(str(err)) from None
    except ValueError as err:
        raise ParamsError(re.sub(r"^TrainConfig\.", "train.", str(err))) from None
    return section


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    return raw


SECTIONS: dict[str, type] = {
    "assets": AssetParams,
    "materialise": MaterialiseParams,
    "tracking": TrackingParams,
    "evaluate": EvaluateParams,
    "infer": InferParams,
}
"""Top-level sections that are plain dataclasses (`tasks`, `model`, `train` have their own checks)."""


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Validate a whole params mapping (as loaded from YAML) into `Params`.

    Every section is checked, whichever stage asks, so a typo under `train:` stops `ingest` before
    any work instead of a later stage after hours of it. Raises ParamsError naming the key path.
    """
    if not isinstance(raw, Mapping):
        raise ParamsError(f"params: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    known = ["seed", "tasks", "model", "train", *SECTIONS]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known sections: {', '.join(known)}"
            raise ParamsError(f"{key}: unknown section{hint}")
    if "seed" not in raw:
        raise ParamsError("seed: required (an integer, e.g. seed: 1)")
    seed = raw["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ParamsError(f"seed: expected an integer >= 0, got {seed!r}")
    tasks_raw = raw.get("tasks")
    if not tasks_raw:
        raise ParamsError("tasks: at least one task is required")
    tasks_raw = _mapping(tasks_raw, "tasks")
    tasks: dict[str, TaskParams] = {}
    for name, spec in tasks_raw.items():
        if not str(name).isidentifier():
            raise ParamsError(f"tasks.{name}: task names must be identifiers (letters, digits, _)")
        spec = dict(_mapping(spec, f"tasks.{name}"))
        source = _build_source(spec.pop("source", None), f"tasks.{name}.source")
        task = _build(TaskParams, {"name": name, "source": source, **spec}, f"tasks.{name}")
        try:  # a malformed instruction, or one materialisation can't store, fails here, before any stage works
            plan_members(parse_instruction(task.instruction))
        except InstructionError as err:
            raise ParamsError(f"tasks.{name}.instruction: {err}") from None
        tasks[name] = task
    built: dict[str, Any] = {"seed": seed, "tasks": tasks}
    for key, cls in SECTIONS.items():
        section = raw.get(key)
        if key == "assets" and isinstance(section, Mapping) and section.get("vq") is not None:
            section = dict(section)
            section["vq"] = _build_vq(section["vq"])
        built[key] = _build(cls, section, key)
    built["model"] = _check_model(raw.get("model"))
    built["train"] = _check_train(raw.get("train"), seed)
    if not built["infer"].tasks:
        built["infer"] = dataclasses.replace(built["infer"], tasks=tuple(tasks))
    params = Params(**built)
    for key, names in (("infer.tasks", params.infer.tasks), ("assets.vocab_tasks", params.assets.vocab_tasks or ())):
        for name in names:
            if name not in tasks:
                close = difflib.get_close_matches(str(name), list(tasks), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"tasks: {', '.join(tasks)}"
                raise ParamsError(f"{key}: {name!r} is not a task; {hint}")
    from pipeline.params_checks import (check_adaptor_choices, check_image_codes, check_input_text,
                                        check_metric_fits, check_transcriber)

    check_adaptor_choices(params)
    check_image_codes(params, raw.get("assets"))
    for name, task in tasks.items():
        check_metric_fits(name, task)
        check_input_text(name, task)
    check_transcriber(params)
    if params.train.get("mixture", "weight") == "weight" and not any(t.weight > 0 for t in tasks.values()):
        raise ParamsError("tasks: every task has weight 0, so the sampler has nothing to draw; "
                          "give at least one task a positive weight")
    return params


def _build_source(raw: Any, path: str) -> SourceSpec:
    if raw is None:
        raise ParamsError(f"{path}: required (a demo generator or a file path)")
    return _build(SourceSpec, raw, path)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`; a missing file or broken YAML is a ParamsError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found (run from the project directory or pass --params)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot read params file: {err}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{path}{where}: not valid YAML: {problem}") from None
    return parse_params(raw)
