"""Evaluation metrics, each scored by a well-kept library where one exists, and the registry that
pairs each with its trivial baseline (`ofasys.metrics.registry.METRICS`)."""

from ofasys.metrics.boxes import box_iou, iou_accuracy, mean_box, parse_box
from ofasys.metrics.error_rates import cer, phone_error_rate, wer
from ofasys.metrics.registry import METRICS, EvalData, Metric, baseline, gain, report, score
from ofasys.metrics.sql import (QueryFailed, execution_accuracy, normalise_sql, open_read_only, run_query,
                                same_result, sql_exact_match)
from ofasys.metrics.text import accuracy, bleu4, bleu_signature, cider, exact_match, rouge_l, token_accuracy

__all__ = ["METRICS", "EvalData", "Metric", "QueryFailed", "accuracy", "baseline", "bleu4", "bleu_signature",
           "box_iou", "cer", "cider", "exact_match", "execution_accuracy", "gain", "iou_accuracy", "mean_box",
           "normalise_sql", "open_read_only", "parse_box", "phone_error_rate", "report", "rouge_l", "run_query",
           "same_result", "score", "sql_exact_match", "token_accuracy", "wer"]
