"""Generalist against specialists at equal per-task compute: the params of each specialist run, and
the table that compares them.

A multitask model is worth having when it keeps most of what one model per task would reach. The
comparison is only honest at equal compute per task: in the generalist, task t fills a share p_t of
the `max_steps * grad_accum` micro-batches (p_t from the mixture: weights, or task sizes under a
temperature), so its specialist trains `round(max_steps * p_t)` updates of the same `grad_accum`
micro-batches, same token budget, model, optimiser and seed. Every step-counted setting (warmup,
validation, checkpoint and log intervals) is scaled by the same share, so a specialist sees the
same schedule shape and the same number of validations as the generalist. The specialist's test
data, decoding and metric are the generalist's own.

A ratio of 1.0 means the generalist matches its specialist. It is generalist / specialist for a
metric where higher is better and specialist / generalist for an error rate, so above 1 always
means the generalist is better.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

STEP_KEYS = ("warmup_steps", "valid_every", "save_every", "log_every")
"""TrainConfig settings counted in updates, scaled with `max_steps` (0 stays 0: "never")."""


def specialist_steps(max_steps: int, share: float) -> int:
    """Updates that give one task alone the micro-batches it gets in the generalist."""
    if not 0 < share <= 1:
        raise ValueError(f"a task's share of the mixture must be in (0, 1], got {share}")
    return max(1, round(max_steps * share))


def specialist_params(plain: Mapping[str, Any], task: str, share: float) -> dict[str, Any]:
    """The params of task `task`'s specialist, from the generalist's validated params as plain data
    (`pipeline.params.to_plain`): that task alone, its compute share of the generalist's updates,
    its own registered model (so the generalist's champion line is untouched) and a run label."""
    out = copy.deepcopy(dict(plain))
    if task not in out["tasks"]:
        raise KeyError(f"{task!r} is not a task of these params; tasks: {', '.join(out['tasks'])}")
    spec = {k: v for k, v in out["tasks"][task].items() if k != "name"}
    out["tasks"] = {task: {**spec, "weight": 1.0}}
    train = dict(out.get("train") or {})
    max_steps = int(train.get("max_steps", _train_default("max_steps")))
    steps = specialist_steps(max_steps, share)
    train["max_steps"] = steps
    for key in STEP_KEYS:
        value = int(train.get(key, _train_default(key)))
        if value > 0:
            train[key] = max(1, round(value * steps / max_steps)) if key != "warmup_steps" else \
                min(steps - 1, round(value * steps / max_steps))
    train["mixture"] = "weight"
    out["train"] = train
    out["assets"] = {**out.get("assets", {}), "vocab_tasks": None}  # the vocabulary is the generalist's
    out["infer"] = {**out.get("infer", {}), "tasks": [task]}
    tracking = dict(out.get("tracking") or {})
    tracking["registered_model"] = f"{tracking.get('registered_model', 'ofasys')}-specialist-{task}"
    tracking["run_label"] = f"specialist {task}"
    out["tracking"] = tracking
    return out


def _train_default(key: str) -> Any:
    from ofasys.training.config import TrainConfig

    return TrainConfig.__dataclass_fields__[key].default


def quality_ratio(generalist: float, specialist: float, higher_is_better: bool) -> float | None:
    """How much of the specialist's quality the generalist keeps (> 1: the generalist is better);
    None when the denominator is 0 (the ratio says nothing there)."""
    num, den = (generalist, specialist) if higher_is_better else (specialist, generalist)
    if den == 0 or not (math.isfinite(num) and math.isfinite(den)):
        return None
    return num / den


def comparison_table(generalist: Mapping[str, Mapping[str, Any]], specialists: Mapping[str, Mapping[str, Any]],
                     steps: Mapping[str, int]) -> dict[str, Any]:
    """Per task: metric name, generalist and specialist scores, ratio, the specialist's updates; and
    the mean ratio over the tasks that have one. Inputs are the tasks' entries of metrics.json."""
    tasks: dict[str, Any] = {}
    for name, g in generalist.items():
        if name not in specialists:
            continue
        metric = g["metric"]
        s = specialists[name]
        if s.get("metric") != metric:
            raise ValueError(f"task {name!r}: the generalist is scored by {metric}, its specialist by {s.get('metric')}")
        ratio = quality_ratio(float(g[metric]), float(s[metric]), bool(g["higher_is_better"]))
        tasks[name] = {
            "metric": metric,
            "generalist": g[metric],
            "specialist": s[metric],
            "baseline": g[f"{metric}_baseline"],
            "ratio": None if ratio is None else round(ratio, 4),
            "specialist_steps": steps[name],
            "higher_is_better": g["higher_is_better"],
        }
    ratios = [t["ratio"] for t in tasks.values() if t["ratio"] is not None]
    return {"tasks": tasks, "mean_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
            "tasks_at_95pct": sum(r >= 0.95 for r in ratios)}


def markdown_table(table: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table (README, MLflow artifact)."""
    lines = ["| task | metric | generalist | specialist | ratio | specialist updates |", "|---|---|---|---|---|---|"]
    for name, t in table["tasks"].items():
        arrow = "" if t["higher_is_better"] else " (lower is better)"
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.3f}"
        lines.append(f"| {name} | {t['metric']}{arrow} | {t['generalist']:.3f} | {t['specialist']:.3f} | {ratio} | "
                     f"{t['specialist_steps']} |")
    mean = "-" if table["mean_ratio"] is None else f"{table['mean_ratio']:.3f}"
    lines.append(f"| **mean** | | | | **{mean}** | |")
    return "\n".join(lines) + "\n"
