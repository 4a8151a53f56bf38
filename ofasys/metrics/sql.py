"""Text-to-SQL metrics: exact match of normalised queries (sqlglot) and execution accuracy (Python's
sqlite3, on the sample's database through a read-only connection with a time limit)."""

from __future__ import annotations

import collections
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Sequence

from ofasys.metrics.common import check_lengths

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
    check_lengths(preds, golds, "sql_exact_match")
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
    check_lengths(preds, golds, "execution_accuracy")
    if len(databases) != len(golds):
        raise ValueError(f"execution_accuracy: {len(golds)} references but {len(databases)} databases")
    executor = _Executor(seconds)
    try:
        hits = sum(executor.correct(p, g, str(d)) for p, g, d in zip(preds, golds, databases))
    finally:
        executor.close()
    return hits / len(preds)


