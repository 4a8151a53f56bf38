"""Batch prediction over a materialised split, and per-task metrics beside their trivial baselines.

A metric alone says little on a small demo: 0.4 IoU accuracy is good only if always predicting the mean
box scores 0.1. So every metric here is reported with the baseline a model must beat, computed from
the train split's references. Error rates (`LOWER_IS_BETTER`) beat their baseline by scoring below
it; `gain` gives the improvement over the baseline with the sign that makes larger better for all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ofasys import metrics as M


@dataclass(frozen=True)
class SamplePrediction:
    """One generated output with the sample's identity and reference."""

    key: str
    outputs: dict[str, Any]
    """Decoded outputs by column: TEXT -> str, BOX -> [x0, y0, x1, y1] in original pixels, ..."""
    refs: dict[str, Any]
    """Raw reference values recorded in the shard at materialisation."""
    tokens: list[int]


def predict(
    model: torch.nn.Module,
    task_data: Any,
    *,
    beam_size: int = 1,
    batch_size: int = 64,
    max_samples: int = 0,
    indices: Sequence[int] | None = None,
    progress: Any = None,
) -> Iterator[SamplePrediction]:
    """Generate for every sample of `task_data` (a `ShardTaskData`), in index order, batched.

    `progress` is an optional callable receiving the number of samples just finished (e.g. a tqdm
    `update`), so callers choose how progress is shown.
    """
    model.eval()
    order = list(indices) if indices is not None else list(range(len(task_data)))
    if max_samples:
        order = order[:max_samples]
    for start in range(0, len(order), batch_size):
        samples = [task_data.get(i) for i in order[start : start + batch_size]]
        batch = task_data.collate_for_generation(samples)
        plans = [task_data.plan(s) for s in samples]
        with torch.inference_mode():
            generated = model.generate(batch, plans, beam_size=beam_size)
        for sample, plan, tokens in zip(samples, plans, generated):
            yield SamplePrediction(
                key=sample.key,
                outputs=plan.decode(tokens, sample.meta),
                refs=dict(sample.meta.get("refs", {})),
                tokens=list(tokens),
            )
        if progress is not None:
            progress(len(samples))


def primary_output(task_data: Any) -> str:
    """The column the task's metric is computed on: the first output slot that names a column."""
    instruction = task_data.instruction
    for side, slot in instruction.templates[0].slots():
        if side == "output" and slot.column:
            return slot.column
    raise ValueError(f"task {task_data.name!r}: no output slot names a column; nothing to evaluate")


LOWER_IS_BETTER = frozenset({"wer", "per"})
"""Metrics that count errors (0 is perfect); all others are accuracies or overlaps (1 is perfect)."""
NEEDS_DATABASE = frozenset({"exec_acc"})
"""Metrics that run each sample's output on its database (see `sample_databases`)."""


def sample_databases(task_data: Any, count: int) -> list[str]:
    """The database of each of the first `count` samples (index order): the `database` a column of
    the sample recorded in its meta at materialisation (a STRUCT schema naming its SQLite file).
    Relative paths are relative to the working directory (the project directory under the pipeline).
    ValueError naming the sample when one has none, or several different ones."""
    out = []
    for i in range(count):
        sample = task_data.get(i)
        found = sorted({str(m["database"]) for m in sample.meta.get("meta", {}).values()
                        if isinstance(m, dict) and m.get("database")})
        if len(found) != 1:
            what = "no database" if not found else f"several databases {found}"
            raise ValueError(f"sample {sample.key} names {what}; execution metrics need exactly one: give its "
                             "STRUCT schema value a \"database\" (the SQLite file it describes)")
        out.append(found[0])
    return out


def _words(text: str) -> list[str]:
    return str(text).split()


def _transcripts(values: Sequence[Any]) -> list[str]:
    """Text outputs for error rates; an output that did not decode (`None`) is an empty transcript."""
    return ["" if v is None else str(v) for v in values]


def gain(metric: str, value: float, baseline_value: float) -> float:
    """How much better than its baseline `value` is, positive when better: `value - baseline` for
    higher-is-better metrics, `baseline - value` for error rates, so gains of different metrics
    can be averaged into one selection score."""
    return baseline_value - value if metric in LOWER_IS_BETTER else value - baseline_value


def _databases(metric: str, databases: Sequence[str] | None) -> Sequence[str]:
    if databases is None:
        raise ValueError(f"{metric} runs each output on its sample's database: pass databases= "
                         "(ofasys.evaluation.sample_databases)")
    return databases


def score(metric: str, predictions: Sequence[Any], references: Sequence[Any],
          databases: Sequence[str] | None = None) -> float:
    """Compute `metric` over aligned predictions and references (see `pipeline.params.METRICS`).
    `databases` (one per sample) is what `NEEDS_DATABASE` metrics execute on."""
    if metric == "bleu4":
        return M.bleu4([str(p) for p in predictions], [[str(r)] for r in references])
    if metric == "iou_acc":
        return M.iou_accuracy(list(predictions), list(references), threshold=0.5)
    if metric == "accuracy":
        return M.accuracy([str(p).strip() for p in predictions], [str(r).strip() for r in references])
    if metric == "token_accuracy":
        return M.token_accuracy([_words(p) for p in predictions], [_words(r) for r in references])
    if metric == "wer":
        return M.wer(_transcripts(predictions), _transcripts(references))
    if metric == "per":
        return M.phone_error_rate(_transcripts(predictions), _transcripts(references))
    if metric == "sql_em":
        return M.sql_exact_match(_queries(predictions), [str(r) for r in references])
    if metric == "exec_acc":
        return M.execution_accuracy(_queries(predictions), [str(r) for r in references],
                                    _databases(metric, databases))
    raise ValueError(f"unknown metric {metric!r}")


def _queries(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def baseline(metric: str, train_refs: Sequence[Any], test_refs: Sequence[Any], inputs: Sequence[Any] = (),
             databases: Sequence[str] | None = None) -> float:
    """The trivial baseline for `metric`: the score of a constant or copying predictor.

    - bleu4: always the most common train caption;  - iou_acc: always the mean train box;
    - accuracy: always the majority train answer;   - token_accuracy: copy the (masked) input;
    - wer / per: always the most common train transcript (an error rate: lower is better);
    - sql_em / exec_acc: always the most common train query (executed on each test sample's database).
    """
    if metric == "bleu4":
        return M.most_common_caption_baseline(list(train_refs), list(test_refs))
    if metric == "iou_acc":
        return M.mean_box_baseline(list(train_refs), list(test_refs))
    if metric == "accuracy":
        return M.majority_baseline([str(r) for r in train_refs], [str(r) for r in test_refs])
    if metric == "token_accuracy":
        return score("token_accuracy", inputs, test_refs)
    if metric in LOWER_IS_BETTER:
        return M.most_common_transcript_baseline(_transcripts(train_refs), _transcripts(test_refs), metric=metric)
    if metric in ("sql_em", "exec_acc"):
        dbs = _databases(metric, databases) if metric in NEEDS_DATABASE else None
        return M.most_common_query_baseline([str(r) for r in train_refs], [str(r) for r in test_refs], dbs,
                                            metric=metric)
    raise ValueError(f"unknown metric {metric!r}")


def companion_figures(metric: str, predictions: Sequence[Any], references: Sequence[Any],
                      train_refs: Sequence[Any]) -> dict[str, float]:
    """Figures reported beside `metric` (with their baselines): execution accuracy comes with the
    stricter exact match of the normalised query, `sql_em`."""
    if metric == "exec_acc":
        return {"sql_em": score("sql_em", predictions, references),
                "sql_em_baseline": baseline("sql_em", train_refs, references)}
    return {}
