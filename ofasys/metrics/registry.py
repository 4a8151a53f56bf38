"""The metric registry: metric name -> how it scores, the trivial baseline it must beat, its direction,
the figures reported beside it and what it needs besides outputs and references.

A metric alone says little on a small demo: "BLEU 30" or "accuracy 0.66" mean something only next to
what a model that ignores its input scores. So each metric names a baseline *predictor* that sees the
training references only (never the test input, except the copy baseline, which is the input the
model is shown), and the baseline's score is the metric applied to that predictor's outputs: the
same code scores the model and its baseline.

Adding a metric is one entry in `METRICS`: params validation (`pipeline.params`), the evaluate stage
and the metrics files all read it, and nothing else dispatches on metric names.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofasys.metrics import boxes, detection, error_rates, images, motion, speech, sql, text
from ofasys.metrics.common import most_common, normalise


_SHARED = {"shared": True}
"""`EvalData` field metadata: one value for all samples, which a one-sample `EvalData` carries whole."""


@dataclass(frozen=True)
class EvalData:
    """What a metric sees of one task's evaluation besides the outputs, aligned per sample (but the
    fields declared with `_SHARED`, which are one value for all samples)."""

    references: Sequence[Any]
    """Each sample's reference output (text, box, label, an image's VQ codes)."""
    train_references: Sequence[Any] = field(default=(), metadata=_SHARED)
    """The train split's references: what baseline predictors may learn from."""
    masked_inputs: Sequence[str] | None = None
    """Each sample's input as the model saw it with masked spans as `<mask>` (infilling's copy baseline)."""
    databases: Sequence[str] | None = None
    """Each sample's SQLite file (execution accuracy)."""
    image_decoder: Callable[[np.ndarray], np.ndarray] | None = field(default=None, metadata=_SHARED)
    """The VQ tokenizer's decoder, one for all samples: an int array N x grid x grid of codes -> N x H x
    W x 3 uint8 images (pixel error compares decoded images)."""
    input_texts: Sequence[str] | None = None
    """Each sample's input text: what a generated motion or speech is of (its label, its sentence)."""
    transcribe: Callable[[Sequence[Any]], list[str]] | None = field(default=None, metadata=_SHARED)
    """The run's own speech recognition: T x 80 log-mel arrays (None for a failed output) -> their
    transcripts, in one batched call (what generated speech is scored by)."""

    def need(self, what: str, metric: str) -> Any:
        value = getattr(self, what)
        if value is None:
            shared = next(f for f in dataclasses.fields(self) if f.name == what).metadata.get("shared")
            raise ValueError(f"{metric} needs {what}{'' if shared else ' for every sample'}; "
                             f"pass EvalData({what}=...)")
        return value


@dataclass(frozen=True)
class Metric:
    """One metric: `score(outputs, data)` and the baseline predictor it is reported beside."""

    score: Callable[[Sequence[Any], EvalData], float]
    baseline: Callable[[EvalData], list[Any]]
    """The trivial predictor's outputs for the test samples, scored by `score` like the model's."""
    outputs: tuple[str, ...]
    """The output kinds it scores (a modality's `output_field`: text, box, phones, image; or objects, a
    repeat group's list of objects per sample, see `ofasys.metrics.detection`)."""
    higher_is_better: bool = True
    companions: tuple[str, ...] = ()
    """Other metrics reported beside it (each with its own baseline), e.g. CIDEr beside BLEU."""
    needs: frozenset[str] = field(default_factory=frozenset)
    """`EvalData` fields it needs besides the references ("masked_inputs", "databases", "image_decoder")."""
    description: str = ""
    perfect: float | None = 1.0
    """The score of a perfect output (BLEU 100, an error rate 0; None when unbounded, CIDEr), which
    marks a sample right in the gallery."""
    per_sample: Callable[[Sequence[Any], EvalData], list[float]] | None = None
    """Each output's own score, when it is not the metric of that output alone (CIDEr's document
    frequencies come from the whole test set), or when scoring outputs one at a time would be slow
    (pixel error decodes images in batches; its per-sample scores are the metric on each output alone)."""


def _texts(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def _most_common_text(data: EvalData) -> list[Any]:
    """The most common training reference (whitespace collapsed) for every test sample."""
    answer = most_common(normalise(str(r)) for r in data.train_references)
    return [answer] * len(data.references)


def _majority_label(data: EvalData) -> list[Any]:
    answer = most_common(str(r).strip() for r in data.train_references)
    return [answer] * len(data.references)


def _mean_box(data: EvalData) -> list[Any]:
    return [boxes.mean_box(list(data.train_references))] * len(data.references)


def _copy_input(data: EvalData) -> list[Any]:
    return list(data.need("masked_inputs", "token_accuracy"))


def _most_common_query(data: EvalData) -> list[Any]:
    """The most common training query, counted after `normalise_sql` (the raw text of its form kept)."""
    queries = [str(q) for q in data.train_references]
    form = most_common(sql.normalise_sql(q) for q in queries)
    answer = min(q for q in queries if sql.normalise_sql(q) == form)
    return [answer] * len(data.references)


def _most_common_codes(data: EvalData) -> list[Any]:
    return [images.most_common_codes(data.train_references)] * len(data.references)


def _mean_image(data: EvalData) -> list[Any]:
    return [images.mean_image(data.train_references, data.need("image_decoder", "pixel_error"))] * len(data.references)


def _mean_object(data: EvalData) -> list[Any]:
    """One object per test image: the mean training box with the majority training label, score 1."""
    obj = detection.mean_object(data.train_references)
    return [[dict(obj)] for _ in data.references]


def _mean_pose(data: EvalData) -> list[Any]:
    return [motion.mean_pose_sequence(list(data.train_references))] * len(data.references)


def _mean_fbank(data: EvalData) -> list[Any]:
    return [speech.mean_fbank_sequence(list(data.train_references))] * len(data.references)


def _transcript_errors(outputs: Sequence[Any], data: EvalData) -> list[float]:
    """Each generated speech's WER against its sentence, all transcribed in one call."""
    heard = data.need("transcribe", "tts_wer")(list(outputs))
    said = _texts(data.need("input_texts", "tts_wer"))
    return [error_rates.wer([h], [r]) for h, r in zip(heard, said)]


def _labels(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None else str(v).strip() for v in values]


METRICS: dict[str, Metric] = {
    "bleu4": Metric(
        lambda out, d: text.bleu4(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        companions=("cider", "rouge_l", "exact_match"), perfect=100.0,
        description="corpus BLEU-4, sacrebleu (0-100); baseline: the most common training text"),
    "cider": Metric(
        lambda out, d: text.cider(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        companions=("bleu4", "rouge_l"), perfect=None,
        per_sample=lambda out, d: text.cider_scores(_texts(out), _texts(d.references)),
        description="CIDEr-D, pycocoevalcap (0-10); baseline: the most common training text"),
    "rouge_l": Metric(
        lambda out, d: text.rouge_l(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        companions=("bleu4",),
        description="ROUGE-L F-measure, rouge-score (0-1); baseline: the most common training text"),
    "exact_match": Metric(
        lambda out, d: text.exact_match(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        description="share of outputs equal to the reference (whitespace collapsed); baseline: the most "
                    "common training text"),
    "accuracy": Metric(
        lambda out, d: text.accuracy(_labels(out), _labels(d.references)), _majority_label, ("text",),
        description="share of labels equal to the reference; baseline: the majority training label"),
    "iou_acc": Metric(
        lambda out, d: boxes.iou_accuracy(list(out), list(d.references)), _mean_box, ("box",),
        description="share of boxes with IoU >= 0.5; baseline: the mean training box"),
    "map50": Metric(
        lambda out, d: detection.map50(list(out), list(d.references)), _mean_object, ("objects",),
        companions=("map",),
        description="COCO AP at IoU 0.5 (0-1), pycocotools, averaged over the labels with reference objects "
                    "(an image without any has no score of its own); baseline: on every image one object, "
                    "the mean training box with the most common training label"),
    "map": Metric(
        lambda out, d: detection.mean_ap(list(out), list(d.references)), _mean_object, ("objects",),
        companions=("map50",),
        description="COCO AP averaged over IoU 0.5:0.95 (0-1), pycocotools, and over the labels with "
                    "reference objects (an image without any has no score of its own); baseline: on every "
                    "image one object, the mean training box with the most common training label"),
    "token_accuracy": Metric(
        lambda out, d: text.token_accuracy(_texts(out), _texts(d.references)), _copy_input, ("text", "phones"),
        needs=frozenset({"masked_inputs"}),
        description="position-wise word accuracy; baseline: the masked input copied unchanged"),
    "wer": Metric(
        lambda out, d: error_rates.wer(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        higher_is_better=False, companions=("cer",), perfect=0.0,
        description="corpus word error rate, jiwer; baseline: the most common training transcript"),
    "cer": Metric(
        lambda out, d: error_rates.cer(_texts(out), _texts(d.references)), _most_common_text, ("text",),
        higher_is_better=False, companions=("wer",), perfect=0.0,
        description="corpus character error rate, jiwer; baseline: the most common training transcript"),
    "per": Metric(
        lambda out, d: error_rates.phone_error_rate(_texts(out), _texts(d.references)), _most_common_text,
        ("phones",), higher_is_better=False, perfect=0.0,
        description="corpus phone error rate, jiwer; baseline: the most common training phone string"),
    "sql_em": Metric(
        lambda out, d: sql.sql_exact_match(_texts(out), _texts(d.references)), _most_common_query, ("text",),
        description="exact match of queries normalised by sqlglot; baseline: the most common training query"),
    "exec_acc": Metric(
        lambda out, d: sql.execution_accuracy(_texts(out), _texts(d.references), d.need("databases", "exec_acc")),
        _most_common_query, ("text",), companions=("sql_em",), needs=frozenset({"databases"}),
        description="share of queries whose result on the sample's database equals the reference's "
                    "(read-only sqlite3); baseline: the most common training query"),
    "code_accuracy": Metric(
        lambda out, d: images.code_accuracy(list(out), list(d.references)), _most_common_codes, ("image",),
        companions=("pixel_error",),
        description="share of an image's VQ code positions equal to the reference's (missing codes are "
                    "wrong), averaged over images; baseline: the per-position most common training code"),
    "pixel_error": Metric(
        lambda out, d: images.pixel_error(list(out), list(d.references), d.need("image_decoder", "pixel_error")),
        _mean_image, ("image",), higher_is_better=False, companions=("code_accuracy",), perfect=0.0,
        needs=frozenset({"image_decoder"}),
        per_sample=lambda out, d: images.pixel_errors(list(out), list(d.references),
                                                      d.need("image_decoder", "pixel_error")),
        description="mean absolute pixel difference (0-255) between the decoded output and the decoded "
                    "reference codes (an incomplete output is mid-grey); baseline: the mean decoded "
                    "training image"),
    "motion_match": Metric(
        lambda out, d: motion.motion_match(list(out), list(d.references), _texts(d.need("input_texts", "motion_match"))),
        _mean_pose, ("motion",), needs=frozenset({"input_texts"}),
        per_sample=lambda out, d: motion.motion_match_scores(list(out), list(d.references),
                                                             _texts(d.need("input_texts", "motion_match"))),
        description="share of generated clips whose nearest test clip (per-feature mean and spread over time, "
                    "standardised) is of the clip's own label: nearest-neighbour label retrieval, as text-to-motion "
                    "papers' R-precision top 1; baseline: the mean training pose sequence for every label"),
    "tts_wer": Metric(
        lambda out, d: error_rates.wer(d.need("transcribe", "tts_wer")(list(out)), _texts(d.need("input_texts", "tts_wer"))),
        _mean_fbank, ("audio",), higher_is_better=False, companions=("fbank_l1",), perfect=0.0,
        needs=frozenset({"transcribe", "input_texts"}), per_sample=_transcript_errors,
        description="corpus word error rate of the run's own speech recognition task on the generated speech "
                    "against the sentence it was to say; baseline: the mean training fbank sequence for every "
                    "sentence"),
    "fbank_l1": Metric(
        lambda out, d: speech.fbank_l1(list(out), list(d.references)), _mean_fbank, ("audio",),
        higher_is_better=False, perfect=0.0,
        per_sample=lambda out, d: speech.fbank_l1_scores(list(out), list(d.references)),
        description="mean absolute log-mel difference to the reference speech, the output resampled to the "
                    "reference's length; baseline: the mean training fbank sequence"),
}
"""Every metric a task can select (`tasks.<name>.metric`), by name."""


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}") from None


def score(name: str, outputs: Sequence[Any], data: EvalData) -> float:
    """`name` on the outputs (aligned with `data.references`)."""
    return metric(name).score(outputs, data)


def baseline(name: str, data: EvalData) -> float:
    """`name`'s trivial baseline: the metric on its baseline predictor's outputs."""
    m = metric(name)
    return m.score(m.baseline(data), data)


def sample_scores(name: str, outputs: Sequence[Any], data: EvalData) -> list[float | None]:
    """Each output's score by `name` (what a predictions file shows beside each row): the metric on
    that output alone (sentence BLEU, the box's hit, the transcript's WER), or the metric's own
    per-output score. None where the metric is undefined for one sample (e.g. an empty reference)."""
    m = metric(name)
    if m.per_sample is not None:
        return list(m.per_sample(outputs, data))
    scores: list[float | None] = []
    for i, output in enumerate(outputs):
        one = _one_sample(data, i)
        try:
            scores.append(m.score([output], one))
        except ValueError:
            scores.append(None)
    return scores


def _one_sample(data: EvalData, i: int) -> EvalData:
    """Sample `i`'s `EvalData`: every per-sample field cut to its `i`th entry (None stays None), the
    shared fields (`_SHARED`) carried whole, so a field added to `EvalData` reaches `sample_scores`
    without a change here."""
    values = {}
    for f in dataclasses.fields(EvalData):
        value = getattr(data, f.name)
        values[f.name] = value if f.metadata.get("shared") or value is None else [value[i]]
    return EvalData(**values)


def gain(name: str, value: float, baseline_value: float) -> float:
    """How much better than its baseline `value` is, positive when better (`baseline - value` for
    error rates), in the metric's own units."""
    return value - baseline_value if metric(name).higher_is_better else baseline_value - value


def needs(name: str) -> frozenset[str]:
    """What `name` and its companions need besides outputs and references (`EvalData` fields)."""
    m = metric(name)
    return m.needs.union(*(metric(c).needs for c in m.companions))


DEGENERATE_SHARE = 0.5
"""An evaluation is flagged degenerate when one output is at least this share of all outputs and more
than twice as common as the most common reference: a model answering the same for most inputs."""


def _hashable(value: Any) -> Any:
    """Lists and arrays (boxes, VQ code lists) as tuples, compared by value; an array's repr would
    elide the middle of a long code list."""
    if isinstance(value, np.ndarray):  # by content: a frame output's thousands of numbers, digested
        return (value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    return tuple(value) if isinstance(value, list) else value


def _share_of_most_common(values: Sequence[Any]) -> float:
    counts = collections.Counter(repr(_hashable(v)) for v in values)
    return max(counts.values()) / len(values) if values else 0.0


def output_spread(outputs: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
    """How concentrated the outputs are, beside the references: `top_output_share`,
    `top_reference_share` and `degenerate` (see `DEGENERATE_SHARE`)."""
    top_out = _share_of_most_common([normalise(o) if isinstance(o, str) else o for o in outputs])
    top_ref = _share_of_most_common([normalise(r) if isinstance(r, str) else r for r in references])
    return {"top_output_share": top_out, "top_reference_share": top_ref,
            "degenerate": bool(top_out >= DEGENERATE_SHARE and top_out > 2 * top_ref)}


def report(name: str, outputs: Sequence[Any], data: EvalData) -> dict[str, Any]:
    """The task's figures for a metrics file: the metric and its baseline, each companion and its
    baseline (`<metric>` / `<metric>_baseline`), `gain` over the baseline, the direction, the output
    spread and the number of samples."""
    m = metric(name)
    figures: dict[str, Any] = {"metric": name}
    for each in (name, *m.companions):
        figures[each] = score(each, outputs, data)
        figures[f"{each}_baseline"] = baseline(each, data)
    figures["gain"] = gain(name, figures[name], figures[f"{name}_baseline"])
    figures["higher_is_better"] = m.higher_is_better
    figures["num_samples"] = len(outputs)
    figures.update(output_spread(outputs, data.references))
    return figures


def describe() -> Mapping[str, str]:
    """Metric name -> one line on what it is and its baseline (for docs and error messages)."""
    return {name: m.description for name, m in METRICS.items()}
