"""Which registered version is the `champion`: the promotion rule, as a pure function of evaluations.

A version becomes champion only when it is better than the current champion *on the same footing*:

1. every task beats its trivial baseline, and no task's output is degenerate (one output for most
   inputs, `ofasys.metrics.registry.output_spread`);
2. there is no champion yet; or the champion was evaluated on the same tasks with the same evaluation
   fingerprints (test shards, metric and decoding settings: `evaluation_fingerprint`), no task
   regresses by more than `tolerance` of the champion's gain over its baseline on that task, and at
   least one task improves by more than that.

Scores of different metrics never mix (BLEU is 0-100, accuracy 0-1): every comparison is per task,
in that task's metric, relative to the champion's own margin over the baseline. A champion evaluated
on other tasks or data is not comparable; it stays until a person moves the alias
(`python -m stages.promote`), which prints the same comparison first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_TOLERANCE = 0.02
"""Share of the champion's gain over the baseline a task may lose (noise) before it counts as a regression."""


class PromotionRefused(ValueError):
    """A hand promotion the rule's own checks refuse (never evaluated, below a baseline, degenerate)."""


@dataclass(frozen=True)
class TaskEvaluation:
    """One task's figures as the rule needs them (kept as a registry version tag)."""

    metric: str
    value: float
    baseline: float
    higher_is_better: bool
    degenerate: bool
    fingerprint: str

    @property
    def gain(self) -> float:
        return self.value - self.baseline if self.higher_is_better else self.baseline - self.value

    @classmethod
    def from_report(cls, report: Mapping[str, Any], fingerprint: str) -> "TaskEvaluation":
        """From a task's entry of metrics.json (`ofasys.metrics.registry.report`)."""
        metric = report["metric"]
        return cls(metric, float(report[metric]), float(report[f"{metric}_baseline"]),
                   bool(report["higher_is_better"]), bool(report["degenerate"]), fingerprint)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    """One line per finding, each naming its task: why it was promoted, or what stopped it."""

    def summary(self) -> str:
        return ("promoted: " if self.promote else "not promoted: ") + "; ".join(self.reasons)


def evaluation_fingerprint(test_shards: list[str], metric: str, settings: Mapping[str, Any]) -> str:
    """sha256 over what makes two evaluations of a task comparable: the test shards' sha256s, the
    metric, and the decoding settings (split, beam size, sample cap)."""
    text = json.dumps({"shards": list(test_shards), "metric": metric, "settings": dict(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def encode(evaluations: Mapping[str, TaskEvaluation]) -> str:
    """Compact JSON for a registry version tag."""
    return json.dumps({t: asdict(e) for t, e in sorted(evaluations.items())}, separators=(",", ":"))


def decode(text: str) -> dict[str, TaskEvaluation]:
    return {t: TaskEvaluation(**e) for t, e in json.loads(text).items()}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def decide(candidate: Mapping[str, TaskEvaluation], champion: Mapping[str, TaskEvaluation] | None,
           tolerance: float = DEFAULT_TOLERANCE, champion_label: str = "the champion") -> Decision:
    """Whether `candidate` should replace `champion` (None: there is none), with the reasons."""
    blocked = []
    for task, e in sorted(candidate.items()):
        if e.degenerate:
            blocked.append(f"{task}: degenerate output (one output for most inputs)")
        if e.gain <= 0:
            blocked.append(f"{task}: {e.metric} {_fmt(e.value)} does not beat its baseline {_fmt(e.baseline)}")
    if blocked:
        return Decision(False, tuple(blocked))
    if champion is None:
        return Decision(True, ("no champion yet, and every task beats its baseline",))
    if set(champion) != set(candidate):
        return Decision(False, (f"{champion_label} was evaluated on tasks {', '.join(sorted(champion))}, this "
                                f"version on {', '.join(sorted(candidate))}: not comparable (move the alias "
                                "by hand to start over: python -m stages.promote)",))
    differ = [t for t in sorted(candidate) if candidate[t].fingerprint != champion[t].fingerprint]
    if differ:
        return Decision(False, (f"{', '.join(differ)}: {champion_label} was evaluated on other test data, metric "
                                "or decoding settings: not comparable (move the alias by hand to start over: "
                                "python -m stages.promote)",))
    regressions, improvements = [], []
    for task in sorted(candidate):
        new, old = candidate[task], champion[task]
        margin = tolerance * abs(old.gain)
        delta = new.gain - old.gain
        line = (f"{task}: {new.metric} {_fmt(new.value)} vs {_fmt(old.value)} ({'+' if delta >= 0 else ''}"
                f"{_fmt(delta)} in gain; tolerance {_fmt(margin)})")
        if delta < -margin:
            regressions.append(line)
        elif delta > margin:
            improvements.append(line)
    if regressions:
        return Decision(False, tuple(f"regresses: {r}" for r in regressions))
    if not improvements:
        return Decision(False, (f"no task improves on {champion_label} beyond the tolerance",))
    return Decision(True, tuple(f"improves: {i}" for i in improvements))
