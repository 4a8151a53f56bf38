"""Evaluation metrics and the trivial baselines each one must beat. Python, numpy, jiwer for the
edit-distance alignment of error rates, sqlite3 and sqlglot for text-to-SQL.

A metric alone says little on a small demo: "BLEU 0.3" or "accuracy 0.66" mean something only next
to what a model that ignores its input would score. So every metric here comes with a baseline that
uses the training labels only (never the test input):

- `majority_baseline`: always answer the most common train label (accuracy / closed sets).
- `most_common_caption_baseline`: always output the most common train caption (BLEU-4, or another
  caption metric).
- `mean_box_baseline`: always output the mean train box (IoU accuracy).
- `copy_baseline`: for text infilling, output the *masked input unchanged*; its token accuracy is
  the share of tokens the masking left visible, so a model scores above it only by recovering
  masked words (copying the visible ones is free).
- `most_common_transcript_baseline`: always output the most common train transcript (word or
  phone error rate).
- `most_common_query_baseline`: always output the most common train SQL query (exact match after
  normalisation, or execution accuracy on each test sample's database).

Text-to-SQL: `sql_exact_match` compares queries normalised by sqlglot; `execution_accuracy` runs the
predicted and the gold query on the sample's SQLite database through a read-only connection with a
time limit and compares their results (Python's sqlite3).

`wer` and `phone_error_rate` count errors: lower is better (0 is perfect, and insertions can push
them above 1); every other metric here is higher-is-better.

Conventions: texts are tokenised on whitespace; boxes are `(x0, y0, x1, y1)` with `x0 <= x1`,
`y0 <= y1` in continuous coordinates (area = width * height, no +1); a `None` prediction (e.g. an
output that did not decode) counts as wrong. Empty inputs raise `ValueError` rather than return NaN.
"""

from __future__ import annotations

import collections
import math
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Hashable, Iterable, Sequence

import jiwer
import numpy as np

Box = Sequence[float]


def _check_lengths(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} predictions but {len(b)} references")
    if len(a) == 0:
        raise ValueError(f"{what}: no examples")


def _tokens(text: str | Sequence[str]) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002) with uniform weights over 1..max_n-grams, no smoothing.

    `refs[i]` is one reference string or a list of them for `hyps[i]`. Per n, clipped n-gram matches
    and hypothesis n-gram counts are summed over the corpus before dividing; the brevity penalty uses
    the corpus hypothesis length c and the sum r of the reference lengths closest to each hypothesis
    length (ties -> the shorter reference): BP = 1 if c > r else exp(1 - r / c). Any zero precision
    makes the score 0, so texts shorter than max_n words score 0 (use a smaller `max_n` or exact
    match for one- or two-word outputs).
    """
    _check_lengths(hyps, refs, "bleu")
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        h = _tokens(hyp)
        rs = [_tokens(ref)] if isinstance(ref, str) else [_tokens(r) for r in ref]
        if not rs:
            raise ValueError("bleu: a hypothesis has an empty list of references")
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(h)), n))
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            max_ref: collections.Counter = collections.Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def bleu4(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU-4 (see `bleu`)."""
    return bleu(hyps, refs, max_n=4)


def _normalise(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


def exact_match(preds: Sequence[str | None], golds: Sequence[str | Sequence[str]]) -> float:
    """Share of predictions equal to (one of) their reference(s) after collapsing whitespace."""
    _check_lengths(preds, golds, "exact_match")
    hits = 0
    for pred, gold in zip(preds, golds):
        options = [gold] if isinstance(gold, str) else list(gold)
        hits += _normalise(pred) is not None and _normalise(pred) in {_normalise(g) for g in options}
    return hits / len(preds)


def accuracy(preds: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Share of predictions equal (`==`) to their gold label."""
    _check_lengths(preds, golds, "accuracy")
    return sum(p is not None and p == g for p, g in zip(preds, golds)) / len(preds)


def parse_box(box: str | Box) -> tuple[float, float, float, float]:
    """`"x0,y0,x1,y1"` or a 4-sequence -> 4 floats; raises ValueError when malformed or inverted."""
    values = box.split(",") if isinstance(box, str) else list(box)
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers x0,y0,x1,y1, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    if not (x0 <= x1 and y0 <= y1) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"a box needs x0 <= x1 and y0 <= y1 (finite), got {box!r}")
    return x0, y0, x1, y1


def box_iou(a: str | Box, b: str | Box) -> float:
    """Intersection over union of two boxes; 0 when the union has no area."""
    ax0, ay0, ax1, ay1 = parse_box(a)
    bx0, by0, bx1, by1 = parse_box(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def iou_accuracy(pred_boxes: Sequence[str | Box | None], gold_boxes: Sequence[str | Box],
                 threshold: float = 0.5) -> float:
    """Share of predicted boxes with IoU >= `threshold` against the gold box (OFA's grounding acc)."""
    _check_lengths(pred_boxes, gold_boxes, "iou_accuracy")
    hits = sum(p is not None and box_iou(p, g) >= threshold for p, g in zip(pred_boxes, gold_boxes))
    return hits / len(pred_boxes)


def token_accuracy(pred_tokens: Sequence[str | Sequence[Hashable]],
                   gold_tokens: Sequence[str | Sequence[Hashable]]) -> float:
    """Position-wise token accuracy over the corpus: correct positions / total gold tokens.

    Strings are split on whitespace. Position i of a gold sequence counts as correct when the
    prediction has the same token at position i; missing predicted positions are wrong and extra
    ones are ignored (length errors already cost the positions they shift).
    """
    _check_lengths(pred_tokens, gold_tokens, "token_accuracy")
    correct = total = 0
    for pred, gold in zip(pred_tokens, gold_tokens):
        p = [] if pred is None else _tokens(pred) if isinstance(pred, str) else list(pred)
        g = _tokens(gold) if isinstance(gold, str) else list(gold)
        correct += sum(a == b for a, b in zip(p, g))
        total += len(g)
    if total == 0:
        raise ValueError("token_accuracy: the gold sequences hold no tokens")
    return correct / total


def _most_common(values: Iterable[Hashable]) -> Hashable:
    counts = collections.Counter(values)
    if not counts:
        raise ValueError("baseline: no training labels")
    # Ties broken by the smallest repr, so the baseline does not depend on the training order.
    return min(counts, key=lambda v: (-counts[v], repr(v)))


def majority_baseline(train_labels: Sequence[Hashable], test_labels: Sequence[Hashable]) -> float:
    """Accuracy on `test_labels` of always answering the most common training label."""
    label = _most_common(train_labels)
    return accuracy([label] * len(test_labels), test_labels)


def most_common_caption_baseline(train_caps: Sequence[str], test_caps: Sequence[str | Sequence[str]],
                                 metric: str = "bleu4") -> float:
    """`metric` ("bleu4" | "exact_match") on the test captions of always predicting the most common
    training caption (compared after collapsing whitespace)."""
    caption = _most_common(_normalise(c) for c in train_caps)
    preds = [caption] * len(test_caps)
    if metric == "bleu4":
        return bleu4(preds, test_caps)
    if metric == "exact_match":
        return exact_match(preds, test_caps)
    raise ValueError(f"most_common_caption_baseline: metric must be 'bleu4' or 'exact_match', got {metric!r}")


def mean_box_baseline(train_boxes: Sequence[str | Box], test_boxes: Sequence[str | Box],
                      threshold: float = 0.5) -> float:
    """IoU accuracy on the test boxes of always predicting the coordinate-wise mean training box."""
    if len(train_boxes) == 0:
        raise ValueError("mean_box_baseline: no training boxes")
    mean = np.mean(np.array([parse_box(b) for b in train_boxes], dtype=np.float64), axis=0)
    box = tuple(float(v) for v in mean)
    return iou_accuracy([box] * len(test_boxes), test_boxes, threshold)


def copy_baseline(masked_inputs: Sequence[str | Sequence[Hashable]],
                  gold_tokens: Sequence[str | Sequence[Hashable]]) -> float:
    """Token accuracy of answering an infilling query with its masked input, unchanged.

    `masked_inputs[i]` is what the model was shown (visible tokens kept, masked ones replaced by a
    mask token), `gold_tokens[i]` the original text. With one mask token per masked token this is
    the share of visible tokens (about 1 - mask_ratio); when a whole span becomes one mask token,
    later positions shift and it is lower. A model that beats it has recovered masked words.
    """
    return token_accuracy(masked_inputs, gold_tokens)


def _edit_rate(hyps: Sequence[str | Sequence[str] | None], refs: Sequence[str | Sequence[str]],
               what: str) -> float:
    """(substitutions + deletions + insertions) / reference tokens, each summed over the corpus."""
    _check_lengths(hyps, refs, what)
    h = ["" if x is None else " ".join(_tokens(x)) for x in hyps]
    r = [" ".join(_tokens(x)) for x in refs]
    if not any(r):
        raise ValueError(f"{what}: the references hold no tokens")
    return float(jiwer.process_words(r, h).wer)


def wer(hyps: Sequence[str | Sequence[str] | None], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus word error rate: minimum word edits (substitutions + deletions + insertions) summed
    over all pairs, divided by the total number of reference words (jiwer's alignment over lists;
    not a mean of per-sentence rates). Lower is better; can exceed 1. Whitespace-tokenised; a
    `None` hypothesis is empty (every reference word deleted)."""
    return _edit_rate(hyps, refs, "wer")


def phone_error_rate(hyps: Sequence[str | Sequence[str] | None], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus phone error rate: `wer` over phone tokens, which are separated by whitespace
    ("θ ɹ iː s ɛ v ə n"); any word-boundary marker the phone strings carry counts as a token."""
    return _edit_rate(hyps, refs, "phone_error_rate")


def most_common_transcript_baseline(train_refs: Sequence[str], test_refs: Sequence[str | Sequence[str]],
                                    metric: str = "wer") -> float:
    """`metric` ("wer" | "per") on the test transcripts of always predicting the most common training
    transcript (compared after collapsing whitespace). Lower is better, like the metric."""
    transcript = _most_common(_normalise(t) for t in train_refs)
    preds = [transcript] * len(test_refs)
    if metric == "wer":
        return wer(preds, test_refs)
    if metric == "per":
        return phone_error_rate(preds, test_refs)
    raise ValueError(f"most_common_transcript_baseline: metric must be 'wer' or 'per', got {metric!r}")


# ----- SQL ----------------------------------------------------------------------------------------

QUERY_SECONDS = 2.0
"""Wall-clock limit of one query in `execution_accuracy` (a prediction over it counts as wrong)."""
MAX_RESULT_ROWS = 100_000
"""Rows fetched at most per query; a prediction returning more counts as wrong."""
MAX_VALUE_BYTES = 10_000_000
"""SQLite's length limit for one string or blob while scoring (`randomblob(1e12)` fails fast)."""


def normalise_sql(sql: str | None) -> str | None:
    """The query as sqlglot re-generates it in the SQLite dialect, with unquoted identifiers
    lowercased (SQLite compares them case-insensitively): spacing, keyword case and the trailing
    semicolon do not matter, string literals do. Text sqlglot can't parse is only whitespace-collapsed."""
    if sql is None:
        return None
    import sqlglot
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

    text = " ".join(str(sql).split()).rstrip(";").strip()
    try:
        parsed = sqlglot.parse(text, read="sqlite")
    except Exception:  # sqlglot's parse and tokenize errors
        return text
    if len(parsed) != 1 or parsed[0] is None:
        return text
    return normalize_identifiers(parsed[0], dialect="sqlite").sql(dialect="sqlite")


def sql_exact_match(preds: Sequence[str | None], golds: Sequence[str]) -> float:
    """Share of predicted queries equal to their gold query after `normalise_sql`."""
    _check_lengths(preds, golds, "sql_exact_match")
    return sum(p is not None and normalise_sql(p) == normalise_sql(g) for p, g in zip(preds, golds)) / len(preds)


class QueryFailed(Exception):
    """A query did not run to a result: SQL error, denied statement, time limit or too many rows."""


_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           sqlite3.SQLITE_RECURSIVE})


def _authorise(action: int, *_args) -> int:
    """Only reading is allowed (no ATTACH, PRAGMA, writes, ...), on top of the read-only open."""
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def open_read_only(path: str | os.PathLike) -> sqlite3.Connection:
    """A connection that can only read the SQLite file `path` (URI mode=ro, `query_only`, an
    authorizer allowing SELECT only); FileNotFoundError when there is no such file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"database {path} not found (relative paths are relative to the working "
                                f"directory, {Path.cwd()})")
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorise)
    return conn


def run_query(conn: sqlite3.Connection, sql: str, seconds: float = QUERY_SECONDS) -> list[tuple]:
    """The rows of `sql`, or QueryFailed. A progress handler interrupts the query after `seconds`."""
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(MAX_RESULT_ROWS + 1)
        cur.close()
    except Exception as exc:  # sqlite3 errors, a NUL in the text, int overflow, ...: the query failed
        raise QueryFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.set_progress_handler(None, 0)
    if len(rows) > MAX_RESULT_ROWS:
        raise QueryFailed(f"more than {MAX_RESULT_ROWS} rows")
    return rows


def _is_ordered(sql: str) -> bool:
    """Whether the query's own result order is defined (a top-level ORDER BY)."""
    import sqlglot

    try:
        parsed = sqlglot.parse_one(sql, read="sqlite")
    except Exception:
        return bool(re.search(r"\border\s+by\b", sql, re.IGNORECASE))
    return parsed is not None and parsed.args.get("order") is not None


def same_result(pred_rows: Sequence[tuple], gold_rows: Sequence[tuple], ordered: bool) -> bool:
    """Equal result sets: as lists when the gold query orders its rows, else as multisets of rows
    (columns in order, values compared by `==`, so 3 and 3.0 agree)."""
    if ordered:
        return list(pred_rows) == list(gold_rows)
    return collections.Counter(map(tuple, pred_rows)) == collections.Counter(map(tuple, gold_rows))


class _Executor:
    """Read-only connections by database, and gold results cached by (database, query)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.conns: dict[str, sqlite3.Connection] = {}
        self.gold: dict[tuple[str, str], tuple[list[tuple], bool]] = {}

    def conn(self, database: str) -> sqlite3.Connection:
        if database not in self.conns:
            self.conns[database] = open_read_only(database)
        return self.conns[database]

    def gold_result(self, database: str, sql: str) -> tuple[list[tuple], bool]:
        key = (database, sql)
        if key not in self.gold:
            try:
                rows = run_query(self.conn(database), sql, self.seconds)
            except QueryFailed as exc:
                raise ValueError(f"execution_accuracy: the gold query {sql!r} fails on {database} ({exc}); "
                                 "fix the reference") from None
            self.gold[key] = (rows, _is_ordered(sql))
        return self.gold[key]

    def correct(self, pred: str | None, gold: str, database: str) -> bool:
        rows, ordered = self.gold_result(database, gold)
        if pred is None or not str(pred).strip():
            return False
        try:
            return same_result(run_query(self.conn(database), str(pred), self.seconds), rows, ordered)
        except QueryFailed:
            return False

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def execution_accuracy(preds: Sequence[str | None], golds: Sequence[str], databases: Sequence[str | os.PathLike],
                       seconds: float = QUERY_SECONDS) -> float:
    """Share of predicted queries whose result on their sample's database equals the gold query's
    (see `same_result`). Each query runs on a read-only connection (`open_read_only`) within
    `seconds`; a prediction that fails to parse, errors, writes, runs out of time or returns more
    than `MAX_RESULT_ROWS` rows is wrong, never an exception. A gold query that fails, or a missing
    database file, raises ValueError / FileNotFoundError: that is a data problem, not a model one."""
    _check_lengths(preds, golds, "execution_accuracy")
    if len(databases) != len(golds):
        raise ValueError(f"execution_accuracy: {len(golds)} references but {len(databases)} databases")
    executor = _Executor(seconds)
    try:
        hits = sum(executor.correct(p, g, str(d)) for p, g, d in zip(preds, golds, databases))
    finally:
        executor.close()
    return hits / len(preds)


def most_common_query_baseline(train_queries: Sequence[str], test_queries: Sequence[str],
                               databases: Sequence[str | os.PathLike] | None = None,
                               metric: str = "sql_em") -> float:
    """`metric` ("sql_em" | "exec_acc") on the test queries of always predicting the most common
    training query (counted after `normalise_sql`, the raw text of the most frequent form kept)."""
    forms = collections.Counter(normalise_sql(q) for q in train_queries)
    if not forms:
        raise ValueError("baseline: no training queries")
    best = min(forms, key=lambda f: (-forms[f], f))
    query = min(q for q in train_queries if normalise_sql(q) == best)
    preds = [query] * len(test_queries)
    if metric == "sql_em":
        return sql_exact_match(preds, test_queries)
    if metric == "exec_acc":
        if databases is None:
            raise ValueError("most_common_query_baseline: exec_acc needs the test samples' databases")
        return execution_accuracy(preds, test_queries, databases)
    raise ValueError(f"most_common_query_baseline: metric must be 'sql_em' or 'exec_acc', got {metric!r}")
