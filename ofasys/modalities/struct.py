"""STRUCT: a table or a database schema -> one linearised text -> int32 BPE ids (a token run, like TEXT).

The linearisations are OFASys's (ofasys/preprocessor/default/struct.py), chosen by `preprocess=`:

- `table`: cells joined by " : ", rows by " | ", after the header::

      [table head] Name : Cylinders : Horsepower [table content] amc rebel sst : 8 : 150 | ford torino : 8 : 140

  with "[table name] <name> " in front when the value names its table (OFASys's dict form).
- `database`: Pete Shaw's schema serialisation, OFASys's `serialize_schema` ("peteshaw"): the
  database id (when given), then each table and its columns::

      chinook | Album : AlbumId , Title , ArtistId | Artist : ArtistId , Name

Raw values (each may also be the JSON text of itself, which is how a parquet column holds them):

- a table: a list of row mappings (the first row's keys are the header, in their order), a list of
  lists whose first row is the header, OFASys's `{"table_name"?, "table_head", "table_content"}`,
  or a pandas DataFrame (inference);
- a schema: `{table: [columns]}`; `{"db_id"?, "database"?, "tables": {table: [columns]}}`, whose
  `database` names the SQLite file the schema describes; or Spider's `{"db_id", "db_table_names",
  "db_column_names": {"table_id", "column_name"}, "db_path"?}` (OFASys's database input), whose
  file is `<db_path>/<db_id>/<db_id>.sqlite`. The file is never opened here: its path is recorded
  in the column's meta (`database`), where evaluation finds it to execute generated SQL.

Without `preprocess=` (or with `default`) the linearisation follows the value's shape: a list (or a
mapping with `table_content`) is a table, any other mapping a schema. A column-oriented table
(`{column: [values]}`) therefore reads as a schema: give tables as rows.

Bad values are rejected rows with a reason: invalid JSON, a ragged table (a row with another number
of cells, or other keys, than the header), a table without rows, a cell that is a list or mapping,
a schema without tables or with a table without columns.

Where this differs from OFASys, and why:
- Case is kept unless `uncased` (OFASys lowercases every table and schema): SQL string literals are
  case-sensitive, and `uncased` is the instruction language's way to ask for lowercasing.
- Cells are not rewritten by OFASys's `get_nodes` (which deletes parentheses and quotes and turns
  commas and underscores into spaces, for WebNLG/DART triple nodes): on ordinary tables that loses
  information. Whitespace runs are collapsed; `no_punctuation` applies to names and cells, never to
  the separators.
- A list of lists has a header row; OFASys's lists are content only (its header is `table_head`).
- `max_length` keeps whole rows (tables) or whole tables (schemas): the longest prefix of whole
  units that fits in `max_length` tokens; only when not even the first unit fits is the text cut at
  `max_length` tokens, as OFASys always does. A truncated value records `{"kept": k, "of": n}` in
  its meta under `truncated`.
- OFASys's schema "db content" (database values matching the question, read from the SQLite file at
  preprocessing) is not added: it needs the question and the database at materialisation time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ofasys.modalities.base import NO_ASSETS, Materialised, Modality, OutputStep, RejectRow, RowContext, is_missing
from ofasys.modalities.text import normalise_text
from ofasys.vocab import UnifiedVocab

CELL_SEP, ROW_SEP = " : ", " | "
"""OFASys's `col_seperator` and `row_seperator` (tables)."""
COLUMN_SEP, TABLE_SEP = " , ", " | "
"""Pete Shaw's column and table separators (schemas)."""
TABLE, DATABASE = "table", "database"
"""The two linearisations (`preprocess=` values)."""


@dataclass(frozen=True)
class Linearised:
    """A linearisation as `prefix` + `units` joined by `sep`, so truncation can keep whole units."""

    prefix: str
    units: tuple[str, ...]
    sep: str
    database: str | None = None
    """The SQLite file a schema describes, when the value names one."""

    def text(self, k: int | None = None) -> str:
        """The text of the prefix and the first `k` units (all by default), in single spaces."""
        return " ".join((self.prefix + self.sep.join(self.units[: len(self.units) if k is None else k])).split())


def _loads(value: Any) -> Any:
    """The raw value as Python objects: JSON text parsed, bytes decoded, arrays and frames as lists."""
    if is_missing(value):
        raise RejectRow("missing table or schema")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RejectRow("table or schema is not valid utf-8") from None
    if isinstance(value, str):
        if not value.strip():
            raise RejectRow("empty table or schema")
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RejectRow(f"table or schema is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise RejectRow("table or schema JSON is nested too deeply") from None
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame: its rows
        return value.to_dict(orient="records")
    return value


def _as_list(value: Any) -> list | None:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return None


def infer_preprocess(value: Any) -> str:
    """`table` or `database`, from the shape of an already-loaded value (see the module docstring)."""
    if _as_list(value) is not None:
        return TABLE
    if isinstance(value, Mapping):
        return TABLE if "table_content" in value else DATABASE
    raise RejectRow(f"a STRUCT value is a table (a list of rows) or a schema (a mapping of tables to columns), "
                    f"not {type(value).__name__}")


def _cell(value: Any, where: str) -> str:
    """A cell as text: strings as they are, numbers in decimal (integral floats without '.0'),
    booleans as true/false, missing cells empty."""
    if is_missing(value):
        return ""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RejectRow(f"{where} is not valid utf-8") from None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isfinite(f) and f.is_integer() and abs(f) < 1e15:
            return str(int(f))
        return repr(f)
    raise RejectRow(f"{where} is a {type(value).__name__}; cells are text, numbers, booleans or null")


def _table_parts(value: Any) -> tuple[str | None, list | str, list[list]]:
    """(table name or None, header cells or a header string, data rows as lists of raw cells)."""
    if isinstance(value, Mapping):
        if "table_content" not in value:
            raise RejectRow("a table is a list of rows (row mappings, or lists under a header row) or "
                            "{table_head, table_content}; this mapping looks like a schema (use preprocess=database)")
        name = value.get("table_name")
        if name is not None and not isinstance(name, str):
            raise RejectRow(f"table_name is a {type(name).__name__}, not text")
        head = value.get("table_head", [])
        head = head if isinstance(head, str) else _as_list(head)
        if head is None:
            raise RejectRow("table_head must be a list of column names or one string")
        content = _as_list(value["table_content"])
        if content is None:
            raise RejectRow("table_content must be a list of rows")
        rows = []
        for i, row in enumerate(content):
            cells = _as_list(row)
            if cells is None:
                raise RejectRow(f"table row {i + 1} is a {type(row).__name__}, not a list of cells")
            rows.append(cells)
        width = len(head) if isinstance(head, list) and head else (len(rows[0]) if rows else 0)
        _check_widths(rows, width, "the header" if isinstance(head, list) and head else "the first row")
        return name, head, rows
    rows_in = _as_list(value)
    if rows_in is None:
        raise RejectRow(f"a table is a list of rows, not {type(value).__name__}")
    if not rows_in:
        raise RejectRow("table has no rows")
    if all(isinstance(r, Mapping) for r in rows_in):
        header = list(rows_in[0].keys())
        for i, row in enumerate(rows_in):
            if list(row.keys()) != header and sorted(map(str, row.keys())) != sorted(map(str, header)):
                raise RejectRow(f"ragged table: row {i + 1} has columns {sorted(map(str, row.keys()))}, "
                                f"row 1 has {sorted(map(str, header))}")
        return None, header, [[row[k] for k in header] for row in rows_in]
    lists = [_as_list(r) for r in rows_in]
    if any(cells is None for cells in lists):
        i = next(i for i, cells in enumerate(lists) if cells is None)
        raise RejectRow(f"table rows must all be row mappings or all lists of cells (row {i + 1} is a "
                        f"{type(rows_in[i]).__name__})")
    header, rows = lists[0], lists[1:]
    if not rows:
        raise RejectRow("table has a header but no rows")
    _check_widths(rows, len(header), "the header")
    return None, header, rows


def _check_widths(rows: list[list], width: int, against: str) -> None:
    for i, cells in enumerate(rows):
        if len(cells) != width:
            raise RejectRow(f"ragged table: row {i + 1} has {len(cells)} cells, {against} has {width}")


def _schema_parts(value: Any) -> tuple[str | None, str | None, list[tuple[Any, Any]]]:
    """(db_id or None, database file or None, [(table, columns)]) of a schema value."""
    if not isinstance(value, Mapping):
        raise RejectRow(f"a schema is a mapping of tables to their columns, not {type(value).__name__} "
                        "(a list is a table: use preprocess=table)")
    if "table_content" in value:
        raise RejectRow("this mapping is a table ({table_head, table_content}), not a schema; use preprocess=table")
    db_id, database = value.get("db_id"), value.get("database")
    if "db_table_names" in value:  # Spider / OFASys: column 0 is "*", of table -1
        names = _as_list(value["db_table_names"])
        cols = value.get("db_column_names")
        ids = _as_list(cols.get("table_id")) if isinstance(cols, Mapping) else None
        col_names = _as_list(cols.get("column_name")) if isinstance(cols, Mapping) else None
        if names is None or ids is None or col_names is None or len(ids) != len(col_names):
            raise RejectRow("a Spider schema needs db_table_names and db_column_names {table_id, column_name} "
                            "of equal length")
        tables = [(name, [c for t, c in zip(ids, col_names) if t == i]) for i, name in enumerate(names)]
        if value.get("db_path") and db_id:
            database = f"{value['db_path']}/{db_id}/{db_id}.sqlite"
    elif isinstance(value.get("tables"), Mapping):
        tables = list(value["tables"].items())
    else:
        tables = list(value.items())
    if db_id is not None and not isinstance(db_id, str):
        raise RejectRow(f"db_id is a {type(db_id).__name__}, not text")
    if database is not None and not isinstance(database, str):
        raise RejectRow(f"database is a {type(database).__name__}, not a path")
    if not tables:
        raise RejectRow("schema has no tables")
    return db_id, database or None, tables


class Struct(Modality):
    name = "STRUCT"
    doc = "table rows / database schema -> linearised text (OFASys's table / database) -> BPE ids"
    text_values = True
    output_field = "text"
    attributes = {"STRUCT": frozenset({
        "no_loss", "mask_ratio", "noise_ratio", "max_length", "min_length", "preprocess", "adaptor", "add_bos",
        "add_eos", "disable_auto_boseos", "uncased", "no_punctuation",
    })}
    materialise_attrs = ("preprocess", "uncased", "no_punctuation", "max_length")
    preprocess = {"default": None, TABLE: None, DATABASE: None}
    """OFASys's struct preprocessors (ofasys/preprocessor/default/struct.py; `table` is its STRUCT
    default, here the default follows the value's shape)."""
    adaptors = {"default": None, "text": None}
    """OFASys's `text` adaptor: the shared token embedding."""

    def records_meta(self, attrs: Mapping[str, Any]) -> frozenset[str]:
        """A schema (preprocess=database, or a default slot whose value may be one) records the
        database it names."""
        return frozenset({"database"}) if attrs.get("preprocess") in (None, "default", DATABASE) else frozenset()

    # ----- linearisation --------------------------------------------------------------------------
    def linearise(self, value: Any, attrs: Mapping[str, Any]) -> Linearised:
        """The value's linearisation (see the module docstring), or RejectRow."""
        loaded = _loads(value)
        kind = attrs.get("preprocess")
        if kind in (None, "default"):
            kind = infer_preprocess(loaded)
        uncased, no_punct = bool(attrs.get("uncased")), bool(attrs.get("no_punctuation"))

        def norm(s: str) -> str:
            return normalise_text(s, uncased=uncased, no_punctuation=no_punct)

        if kind == TABLE:
            name, head, rows = _table_parts(loaded)
            if isinstance(head, str):
                head_text = norm(head)
            else:
                head_text = CELL_SEP.join(norm(_cell(h, f"header cell {j + 1}")) for j, h in enumerate(head))
            units = tuple(
                CELL_SEP.join(norm(_cell(c, f"row {i + 1} cell {j + 1}")) for j, c in enumerate(row))
                for i, row in enumerate(rows)
            )
            if not units:
                raise RejectRow("table has no rows")
            named = f"[table name] {norm(name)} " if name else ""
            return Linearised(f"{named}[table head] {head_text} [table content] ", units, ROW_SEP)
        if kind == DATABASE:
            db_id, database, tables = _schema_parts(loaded)
            units = []
            for table, columns in tables:
                if not isinstance(table, str) or not table.strip():
                    raise RejectRow(f"schema table name {table!r} is not a non-empty string")
                cols = _as_list(columns)
                if cols is None:
                    raise RejectRow(f"schema table {table!r}: columns must be a list of names, not "
                                    f"{type(columns).__name__}")
                if not cols:
                    raise RejectRow(f"schema table {table!r} has no columns")
                if not all(isinstance(c, str) and c.strip() for c in cols):
                    raise RejectRow(f"schema table {table!r}: every column name must be a non-empty string")
                units.append(f"{norm(table)} : {COLUMN_SEP.join(norm(c) for c in cols)}")
            prefix = f"{norm(db_id)}{TABLE_SEP}" if db_id and db_id.strip() else ""
            return Linearised(prefix, tuple(units), TABLE_SEP, database)
        raise RejectRow(f"unknown STRUCT preprocess {kind!r}")  # the parser refuses it first

    def text_for_vocab(self, value: Any, attrs: Mapping[str, Any]) -> Any:
        """The linearised text (what the BPE must learn to encode); None for a bad value."""
        try:
            return self.linearise(value, attrs).text()
        except RejectRow:
            return None

    # ----- materialisation ------------------------------------------------------------------------
    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        lin = self.linearise(value, attrs)
        ids, text, kept = fit(lin, attrs.get("max_length"), ctx.vocab)
        meta: dict[str, Any] = {}
        if lin.database:
            meta["database"] = lin.database
        if kept < len(lin.units):
            meta["truncated"] = {"kept": kept, "of": len(lin.units)}
        return Materialised(np.asarray(ids, dtype=np.int32), meta=meta or None, ref=text)

    # ----- generation -----------------------------------------------------------------------------
    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        """Text ids until the terminator (a generated table or schema is its linearised text)."""
        return OutputStep("run", column, self.name, allowed=vocab.text_range, terminator=terminator,
                          max_length=int(attrs.get("max_length") or default_max),
                          min_length=int(attrs.get("min_length") or 0))

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        """The linearised text (not parsed back into rows)."""
        return vocab.decode_text(ids)


def fit(lin: Linearised, max_length: Any, vocab: UnifiedVocab) -> tuple[list[int], str, int]:
    """(ids, text, units kept): everything when it fits in `max_length` tokens (or there is no limit),
    else the longest prefix of whole units that fits, else the text cut at `max_length` tokens."""
    n = len(lin.units)
    text = lin.text()
    ids = vocab.encode_text(text)
    if not max_length or len(ids) <= int(max_length):
        return ids, text, n
    limit = int(max_length)
    lo, hi = 0, n - 1  # the largest k in [1, n-1] whose text fits (token counts grow with k)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(vocab.encode_text(lin.text(mid))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo >= 1:
        text = lin.text(lo)
        return vocab.encode_text(text), text, lo
    ids = ids[:limit]
    return ids, vocab.decode_text(ids), 0


__all__ = ["Linearised", "Struct", "fit", "infer_preprocess"]
