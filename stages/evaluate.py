"""Stage `evaluate`: per-task metric beside its trivial baseline -> metrics/metrics.json and MLflow.

The `champion` registry alias moves to the newly trained version only when the selection score (the
mean, over tasks, of the gain over the baseline: metric minus baseline, or baseline minus metric for
error rates such as WER) beats the current champion's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stages import cli

log = logging.getLogger("evaluate")

OUT = Path("metrics")
SELECTION = "mean_gain_over_baseline"


def masked_inputs(task_data, indices) -> list[str]:
    """The infilling input as the model sees it at evaluation (masked spans shown as `<mask>`)."""
    collator = task_data.collator
    template = task_data.instruction.templates[0]
    slot = next(s for side, s in template.slots() if side == "input" and s.attrs.get("mask_ratio"))
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for i in indices:
        ids = collator._slot_tokens(task_data.get(i), slot, rng, False, "input")
        words, piece = [], []
        for t in list(ids) + [None]:
            if t is None or t == task_data.vocab.mask:
                if piece:
                    words.append(task_data.vocab.decode_text(piece))
                    piece = []
                if t is not None:
                    words.append("<mask>")
            else:
                piece.append(int(t))
        out.append(" ".join(w for w in words if w))
    return out


def evaluate_task(name, task, model, vocab, params, work: Path) -> dict:
    from tqdm import tqdm

    from ofasys.batch_inference import BatchInferenceConfig, predict_to_parquet
    from ofasys.data.task_data import ShardTaskData
    from ofasys.evaluation import (LOWER_IS_BETTER, NEEDS_DATABASE, baseline, companion_figures, gain,
                                   primary_output, sample_databases, score)
    from ofasys import metrics as M

    manifest = Path("data/shards") / name / "manifest.json"
    test = ShardTaskData(manifest, params.evaluate.split, vocab)
    train = ShardTaskData(manifest, "train", vocab)
    column = primary_output(test)
    cfg = BatchInferenceConfig(beam_size=params.evaluate.beam_size, batch_size=params.evaluate.batch_size,
                               max_samples=params.evaluate.max_samples)
    total = len(test) if not cfg.max_samples else min(len(test), cfg.max_samples)
    with tqdm(total=total, desc=f"evaluate {name}", unit="sample") as bar:
        _, preds = predict_to_parquet(model, test, OUT / "predictions" / f"{name}.parquet",
                                      work, cfg, progress=bar.update)
    outputs = [p.outputs.get(column) for p in preds]
    refs = [p.refs.get(column) for p in preds]
    train_refs = [train.get(i).meta["refs"][column] for i in range(len(train))]
    inputs = masked_inputs(test, range(len(preds))) if task.metric == "token_accuracy" else ()
    databases = sample_databases(test, len(preds)) if task.metric in NEEDS_DATABASE else None
    entry = {
        "metric": task.metric,
        "column": column,
        "value": score(task.metric, outputs, refs, databases),
        "baseline": baseline(task.metric, train_refs, refs, inputs, databases),
        "num_samples": len(preds),
        **companion_figures(task.metric, outputs, refs, train_refs),
    }
    if task.metric == "bleu4":  # captions: exact match is the stricter companion figure
        entry["exact_match"] = M.exact_match([str(o) for o in outputs], [str(r) for r in refs])
        entry["exact_match_baseline"] = M.most_common_caption_baseline(train_refs, refs, metric="exact_match")
    entry["lower_is_better"] = task.metric in LOWER_IS_BETTER
    entry["gain"] = gain(task.metric, entry["value"], entry["baseline"])
    log.info("%s: %s %.3f (baseline %.3f, %s is better) on %d samples", name, task.metric, entry["value"],
             entry["baseline"], "lower" if entry["lower_is_better"] else "higher", entry["num_samples"])
    return entry


def main(args, params) -> None:
    import mlflow

    from ofasys.inference import OFASys
    from pipeline import tracking

    record = json.loads(Path("checkpoints/run.json").read_text())
    pretrained = OFASys.from_pretrained("checkpoints/final")
    work = Path(".cache/evaluate")
    results = {name: evaluate_task(name, task, pretrained.model, pretrained.vocab, params, work)
               for name, task in params.tasks.items()}
    selection = sum(r["gain"] for r in results.values()) / len(results)
    OUT.mkdir(exist_ok=True)
    tmp = OUT / "metrics.json.tmp"
    tmp.write_text(json.dumps({**results, SELECTION: selection}, indent=2, sort_keys=True) + "\n")
    tmp.replace(OUT / "metrics.json")

    tracking.setup(params.tracking)
    with mlflow.start_run(run_id=record["run_id"]):
        for name, r in results.items():
            mlflow.log_metric(f"eval/{r['metric']}/{name}", r["value"])
            mlflow.log_metric(f"eval/baseline_{r['metric']}/{name}", r["baseline"])
        mlflow.log_metric(f"eval/{SELECTION}", selection)
        mlflow.log_artifact(str(OUT / "metrics.json"))
    promoted = tracking.promote_if_better(params.tracking.registered_model, record["version"], selection, SELECTION)
    log.info("selection %s = %.4f; champion %s", SELECTION, selection,
             f"moved to version {record['version']}" if promoted else "unchanged")


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
