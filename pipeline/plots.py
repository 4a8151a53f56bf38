"""Pictures of a run that render with no network: PNG files DVC shows as image plots.

`dvc plots show` draws CSV plots with vega loaded from a CDN, which an air-gapped cluster cannot
reach; an image plot is an `<img>` in the page. So the stages draw their own figures with matplotlib
(headless Agg backend) and declare the PNGs as DVC plots, while the CSVs stay plain outputs for
anyone who wants the numbers:

- `curves_png`: per task, the training loss and the validation loss against the update step.
- `metrics_png`: per task, the model's metric beside its trivial baseline (one panel per task,
  since BLEU's 0-100 and accuracy's 0-1 share no axis), marked when the output is degenerate.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    """PNG without timestamps in its metadata (same figures, same bytes), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    os.replace(tmp, out)


def read_curve(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A curve CSV (step, loss, one column per task) -> column -> [(step, value)], empty cells skipped."""
    if not path.is_file():
        return {}
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for name, value in row.items():
                if name != "step" and value not in ("", None):
                    series.setdefault(name, []).append((step, float(value)))
    return series


def _panels(plt, n: int, width: float, height: float):
    """A figure with one panel per item, three to a row."""
    cols = min(3, max(1, n))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, list(axes.flat)


def _finish(plt, fig, axes, used: int, out: Path) -> None:
    """Blank the unused panels, lay out, save, and free the figure."""
    for ax in axes[used:]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def curves_png(train_csv: Path, valid_csv: Path, out: Path) -> None:
    """One panel per task: train loss (solid) and valid loss (dashed, dots) against the step."""
    plt = _pyplot()
    train, valid = read_curve(train_csv), read_curve(valid_csv)
    tasks = sorted((set(train) | set(valid)) - {"loss"}) or ["loss"]
    fig, axes = _panels(plt, len(tasks), 4, 2.8)
    for ax, task in zip(axes, tasks):
        for series, style, label in ((train, "-", "train"), (valid, "--o", "valid")):
            points = series.get(task, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], style, label=label, markersize=3)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("update", fontsize=8)
        ax.set_ylabel("NLL / token", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    _finish(plt, fig, axes, len(tasks), out)


def metrics_png(metrics: Mapping[str, Any], out: Path) -> None:
    """One panel per task: model vs trivial baseline on the task's metric (direction in the title)."""
    plt = _pyplot()
    tasks = sorted(t for t, e in metrics.items() if isinstance(e, Mapping) and "metric" in e)
    fig, axes = _panels(plt, len(tasks), 3.2, 2.6)
    for ax, task in zip(axes, tasks):
        entry = metrics[task]
        name = entry["metric"]
        values = [entry[name], entry[f"{name}_baseline"]]
        colors = ["tab:red" if entry.get("degenerate") else "tab:blue", "tab:gray"]
        bars = ax.bar(["model", "baseline"], values, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        arrow = "higher is better" if entry.get("higher_is_better", True) else "lower is better"
        flag = " DEGENERATE" if entry.get("degenerate") else ""
        ax.set_title(f"{task}: {name} ({arrow}){flag}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    _finish(plt, fig, axes, len(tasks), out)
