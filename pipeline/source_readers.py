"""Reading one source file (parquet, JSON lines, CSV) into a table, with errors a user can act on.

pyarrow reads every well-formed file (fast, typed); only when it fails is the file re-scanned with
Python's own `json` / `csv` to name the first bad line and its real cause ("line 17: the JSON object
is truncated"), because pyarrow reports byte blocks, not lines. Blank lines in JSON lines are
skipped (they are not records), but line numbers in messages count them, so they match an editor.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

READERS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
"""Source file extension -> reader."""


class SourceError(ValueError):
    """A source spec or its files cannot be ingested; the message names the field, path or column."""


def read_source(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One source file as a table, by its extension; a malformed file raises a one-line `SourceError`.

    `columns` limits the result to those of the named columns the file has (parquet reads only them).
    """
    path = Path(path)
    kind = READERS[path.suffix.lower()]
    try:
        if kind == "parquet":
            table, names = _read_parquet(path, columns)
        else:
            table = _read_jsonl(path) if kind == "jsonl" else _read_csv(path)
            names = table.column_names
    except OSError as err:  # unreadable (permissions, I/O): pyarrow's own errors are handled per reader
        raise SourceError(f"{path}: cannot read the file: {_one_line(err)}") from None
    if not names:
        raise SourceError(f"{path}: the file has no records (it is empty)")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise SourceError(f"{path}: column {doubled[0]!r} appears more than once; give each column its own name")
    if columns is not None:
        table = table.select([c for c in table.column_names if c in set(columns)])
    return table


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split())


def _read_parquet(path: Path, columns: Sequence[str] | None) -> tuple[pa.Table, list[str]]:
    """The table (only `columns`, when given) and the names of all the file's columns."""
    try:
        if columns is not None:
            names = pq.read_schema(path).names
            return pq.read_table(path, columns=[c for c in names if c in set(columns)]), names
        table = pq.read_table(path)
        return table, table.column_names
    except (pa.ArrowException, OSError) as err:
        cause = re.sub(r"^Could not open Parquet input source '[^']*':\s*", "", _one_line(err))
        raise SourceError(f"{path}: not a readable parquet file: {cause}; check that the copy is complete "
                          "or write it again") from None


def _read_jsonl(path: Path) -> pa.Table:
    import pyarrow.json as pj

    try:
        table = pj.read_json(path)
    except pa.ArrowInvalid as err:
        if "Empty JSON file" in str(err):
            raise SourceError(f"{path}: the file has no records (it is empty)") from None
        problem, longest = _jsonl_problem(path)
        if problem is not None:
            raise SourceError(f"{path} line {problem[0]}: {problem[1]}") from None
        if "straddl" not in str(err) or longest >= 2**31 - 1:
            raise SourceError(f"{path}: cannot read as JSON lines: {_one_line(err)}") from None
        try:  # a line longer than pyarrow's block (1 MiB): read again with blocks that hold the longest line
            table = pj.read_json(path, read_options=pj.ReadOptions(block_size=max(longest + 1, 1 << 20)))
        except pa.ArrowInvalid as err2:
            raise SourceError(f"{path}: cannot read as JSON lines: {_one_line(err2)}") from None
    try:  # pyarrow's JSON reader does not check UTF-8: do it before a bad string reaches the parquet
        table.validate(full=True)
        table.column_names  # noqa: B018 (names are decoded here)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise _utf8_error(path) from None
    return table


def _read_csv(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(path)
        table.column_names  # noqa: B018 (names are decoded here)
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):
            raise SourceError(f"{path}: the file is empty (a CSV file starts with a header line)") from None
        problem = _csv_problem(path)
        if problem is not None:
            raise SourceError(f"{path} line {problem[0]}: {problem[1]}") from None
        raise SourceError(f"{path}: cannot read as csv: {_one_line(err)}") from None
    if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in table.schema):
        raise _utf8_error(path)  # pyarrow reads text that is not UTF-8 as a binary column
    return table


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset of the line in the file, line bytes) of a text file."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield number, offset, raw
            offset += len(raw)


def _decode_line(number: int, offset: int, raw: bytes) -> str | tuple[int, str]:
    """The line as text, or (line, message) naming the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        start = err.start + (3 if number == 1 and raw.startswith(b"\xef\xbb\xbf") else 0)
        return number, (f"invalid UTF-8 byte 0x{raw[start]:02x} at byte offset {offset + start} of the file "
                        f"(byte {start + 1} of the line); save the file as UTF-8")


def _utf8_error(path: Path) -> SourceError:
    for number, offset, raw in _lines(path):
        decoded = _decode_line(number, offset, raw)
        if isinstance(decoded, tuple):
            return SourceError(f"{path} line {decoded[0]}: {decoded[1]}")
    return SourceError(f"{path}: a value is not valid UTF-8 text; save the file as UTF-8")


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for name, value in pairs:
        if name in seen:
            raise _DuplicateKey(name)
        seen[name] = value
    return seen


_KINDS = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "an array"),
          (dict, "an object"))


def _kind(value: object) -> str | None:
    for typ, name in _KINDS:
        if isinstance(value, typ):
            return name
    return None  # null: fits any column


def _type_change(value: object, column: str, kinds: dict[str, tuple[str, int]], number: int) -> str | None:
    """Where `value` (on line `number`) gives `column` another JSON type than an earlier line did."""
    kind = _kind(value)
    if kind is None:
        return None
    if column:
        first, line = kinds.setdefault(column, (kind, number))
        if first != kind:
            return (f"column {column!r} is {kind} here but {first} on line {line}; give a column one type on "
                    "every line (null for a missing value)")
    if isinstance(value, dict):
        for name, item in value.items():
            found = _type_change(item, f"{column}.{name}" if column else name, kinds, number)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _type_change(item, f"{column}[]", kinds, number)
            if found:
                return found
    return None


def _json_error(err: json.JSONDecodeError, text: str) -> str:
    msg = re.sub(r"\s+(starting )?at$", "", err.msg)
    msg = msg[:1].lower() + msg[1:]
    if msg.startswith("unterminated string"):
        return f"the JSON object is truncated ({msg} starting at column {err.colno})"
    if msg.startswith("expecting") and err.pos >= len(text.rstrip(" \t\r\n")):
        return f"the JSON object is truncated ({msg} at the end of the line)"
    if msg == "extra data":
        return f"unexpected text after the JSON object at column {err.colno}; write one object per line"
    return f"invalid JSON at column {err.colno}: {msg}"


def _jsonl_problem(path: Path) -> tuple[tuple[int, str] | None, int]:
    """The first line pyarrow cannot read and why (or None), and the longest line's length in bytes."""
    kinds: dict[str, tuple[str, int]] = {}
    longest = 0
    for number, offset, raw in _lines(path):
        longest = max(longest, len(raw))
        text = _decode_line(number, offset, raw)
        if isinstance(text, tuple):
            return text, longest
        text = text.removesuffix("\n").removesuffix("\r")
        if not text.strip(" \t"):
            continue  # blank lines are allowed (see the module docstring)
        try:
            value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as err:
            return (number, _json_error(err, text)), longest
        except _DuplicateKey as err:
            return (number, f"key {err.args[0]!r} appears twice in the object"), longest
        if not isinstance(value, dict):
            return (number, f"{_kind(value) or 'null'}, not a JSON object; each line must be one object "
                            "like {\"column\": value}"), longest
        found = _type_change(value, "", kinds, number)
        if found:
            return (number, found), longest
    return None, longest


def _csv_problem(path: Path) -> tuple[int, str] | None:
    """The first line of a CSV file pyarrow cannot read and why, or None."""
    for number, offset, raw in _lines(path):
        decoded = _decode_line(number, offset, raw)
        if isinstance(decoded, tuple):
            return decoded
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header: tuple[int, int] | None = None
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return None
            except csv.Error as err:
                return start, f"not valid CSV: {err}"
            if not record:
                continue  # empty lines are skipped, as pyarrow does
            if header is None:
                header = (start, len(record))
            elif len(record) != header[1]:
                text = ",".join(record)
                shown = text if len(text) <= 60 else text[:57] + "..."
                return start, (f"{len(record)} fields but the header (line {header[0]}) has {header[1]}: "
                               f"{shown!r}; quote values that contain a comma")


# ---------------------------------------------------------------------------------------------- splitting
