"""STRUCT: tables and database schemas -> OFASys's linearisations -> BPE ids, rejects with reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ofasys.data.members import plan_members
from ofasys.instruction import parse_instruction
from ofasys.modalities import MODALITIES, RejectRow
from ofasys.modalities.struct import Struct

STRUCT = MODALITIES["STRUCT"]
ROWS = [{"Name": "amc rebel sst", "Cylinders": 8, "Horsepower": 150},
        {"Name": "ford torino", "Cylinders": 8, "Horsepower": 140.0}]
LISTS = [["Name", "Cylinders", "Horsepower"], ["amc rebel sst", 8, 150], ["ford torino", 8, 140]]
TABLE_TEXT = ("[table head] Name : Cylinders : Horsepower [table content] "
              "amc rebel sst : 8 : 150 | ford torino : 8 : 140")
SCHEMA = {"Album": ["AlbumId", "Title", "ArtistId"], "Artist": ["ArtistId", "Name"]}
SCHEMA_TEXT = "Album : AlbumId , Title , ArtistId | Artist : ArtistId , Name"


def text_of(out, vocab) -> str:
    return vocab.decode_text(out.array.tolist())


@pytest.mark.parametrize("value", [ROWS, LISTS, json.dumps(ROWS), json.dumps(LISTS), json.dumps(LISTS).encode(),
                                   pd.DataFrame(ROWS), tuple(LISTS)],
                         ids=["row-dicts", "lists", "json-rows", "json-lists", "bytes", "dataframe", "tuple"])
def test_every_table_form_gives_ofasys_table_linearisation(ctx, vocab, value):
    for attrs in ({}, {"preprocess": "table"}, {"preprocess": "default"}):
        out = STRUCT.materialise(value, attrs, ctx)
        assert out.array.dtype == np.int32 and out.array.ndim == 1
        assert out.ref == TABLE_TEXT
        assert out.array.tolist() == vocab.encode_text(TABLE_TEXT)
        assert text_of(out, vocab) == TABLE_TEXT
        assert out.meta is None


def test_ofasys_dict_form_and_uncased_match_ofasys_output(ctx):
    """OFASys's `table` preprocess on {table_name, table_head, table_content}: cells ' : ', rows ' | ',
    '[table name] .. [table head] .. [table content] ..', all lowercase (here: with `uncased`)."""
    value = {"table_name": "Cars", "table_head": "Name : Cylinders",
             "table_content": [["AMC Rebel", "8"], ["Ford  Torino", "8"]]}
    out = STRUCT.materialise(value, {"uncased": True}, ctx)
    assert out.ref == "[table name] cars [table head] name : cylinders [table content] amc rebel : 8 | ford torino : 8"
    # a list head is joined like a row; case is kept without uncased
    value = {"table_head": ["Name", "Cylinders"], "table_content": [["AMC Rebel", 8]]}
    assert STRUCT.materialise(value, {}, ctx).ref == "[table head] Name : Cylinders [table content] AMC Rebel : 8"


def test_cells_are_rendered_and_normalised_but_separators_are_kept(ctx):
    table = [["a b", "c_d", "e"], ["  x\n y ", 2.5, None], [True, 1e20, float("nan")], ["Hi, there!", -3.0, 7]]
    out = STRUCT.materialise(table, {}, ctx)
    assert out.ref == ("[table head] a b : c_d : e [table content] x y : 2.5 : | true : 1e+20 : "
                       "| Hi, there! : -3 : 7")
    out = STRUCT.materialise(table, {"uncased": True, "no_punctuation": True}, ctx)
    assert out.ref == ("[table head] a b : cd : e [table content] x y : 25 : | true : 1e20 : | hi there : 3 : 7")


def test_schema_linearisation_is_pete_shaws_as_in_ofasys(ctx, vocab):
    for value in (SCHEMA, json.dumps(SCHEMA)):
        for attrs in ({}, {"preprocess": "database"}):
            out = STRUCT.materialise(value, attrs, ctx)
            assert out.ref == SCHEMA_TEXT and text_of(out, vocab) == SCHEMA_TEXT
            assert out.meta is None
    # OFASys's serialize_schema (peteshaw, db_id, normalize_query) gives " | db | t : c , c | ..." (stripped)
    wrapped = {"db_id": "Chinook", "tables": SCHEMA}
    assert STRUCT.materialise(wrapped, {"uncased": True}, ctx).ref == \
        "chinook | album : albumid , title , artistid | artist : artistid , name"


def test_a_schema_naming_its_database_records_it_in_the_meta(ctx):
    out = STRUCT.materialise({"db_id": "chinook", "database": "dbs/chinook.sqlite", "tables": SCHEMA}, {}, ctx)
    assert out.ref == f"chinook | {SCHEMA_TEXT}"
    assert out.meta == {"database": "dbs/chinook.sqlite"}


def test_spider_schema_form_as_ofasys_reads_it(ctx):
    spider = {
        "db_id": "concert_singer", "db_path": "database",
        "db_table_names": ["stadium", "singer"],
        "db_column_names": {"table_id": [-1, 0, 0, 1, 1], "column_name": ["*", "Stadium_ID", "Location", "Singer_ID", "Name"]},
    }
    out = STRUCT.materialise(spider, {"uncased": True}, ctx)
    assert out.ref == "concert_singer | stadium : stadium_id , location | singer : singer_id , name"
    assert out.meta == {"database": "database/concert_singer/concert_singer.sqlite"}


def test_the_default_linearisation_follows_the_value_shape_and_preprocess_overrides_it(ctx):
    assert STRUCT.linearise(LISTS, {}).units == ("amc rebel sst : 8 : 150", "ford torino : 8 : 140")
    assert STRUCT.linearise(SCHEMA, {}).units == ("Album : AlbumId , Title , ArtistId", "Artist : ArtistId , Name")
    # a column-oriented table reads as a schema by default; preprocess=table refuses it with the fix
    with pytest.raises(RejectRow, match="looks like a schema"):
        STRUCT.materialise({"Name": ["a", "b"]}, {"preprocess": "table"}, ctx)
    with pytest.raises(RejectRow, match=r"a list is a table: use preprocess=table"):
        STRUCT.materialise(LISTS, {"preprocess": "database"}, ctx)
    with pytest.raises(RejectRow, match="not a schema; use preprocess=table"):
        STRUCT.materialise({"table_content": [["a"]]}, {"preprocess": "database"}, ctx)


@pytest.mark.parametrize("value,attrs,reason", [
    (None, {}, "missing table or schema"),
    (float("nan"), {}, "missing table or schema"),
    ("   ", {}, "empty table or schema"),
    ('[["a", "b"], [1, 2]', {}, "table or schema is not valid JSON (Expecting ',' delimiter at line 1 column 20)"),
    (b"\xff", {}, "table or schema is not valid utf-8"),
    ("[" * 100_000 + "]" * 100_000, {}, "table or schema JSON is nested too deeply"),
    ('"just text"', {}, "a STRUCT value is a table (a list of rows) or a schema (a mapping of tables to columns), not str"),
    (42, {}, "a STRUCT value is a table (a list of rows) or a schema (a mapping of tables to columns), not int"),
    ([], {}, "table has no rows"),
    ([["a", "b"]], {}, "table has a header but no rows"),
    ([["a", "b"], [1, 2], [3]], {}, "ragged table: row 2 has 1 cells, the header has 2"),
    ([{"a": 1, "b": 2}, {"a": 3}], {}, "ragged table: row 2 has columns ['a'], row 1 has ['a', 'b']"),
    ([{"a": 1}, ["x"]], {}, "table rows must all be row mappings or all lists of cells (row 1 is a dict)"),
    ([["a"], [[1, 2]]], {}, "row 1 cell 1 is a list; cells are text, numbers, booleans or null"),
    ({"table_head": ["a", "b"], "table_content": [["x"]]}, {}, "ragged table: row 1 has 1 cells, the header has 2"),
    ({}, {}, "schema has no tables"),
    ({"Album": []}, {}, "schema table 'Album' has no columns"),
    ({"Album": "AlbumId"}, {}, "schema table 'Album': columns must be a list of names, not str"),
    ({"Album": ["AlbumId", 3]}, {}, "schema table 'Album': every column name must be a non-empty string"),
    ({"tables": {"": ["a"]}}, {}, "schema table name '' is not a non-empty string"),
    ({"db_id": 3, "tables": SCHEMA}, {}, "db_id is a int, not text"),
])
def test_bad_values_are_rejected_with_a_reason(ctx, value, attrs, reason):
    with pytest.raises(RejectRow) as err:
        STRUCT.materialise(value, attrs, ctx)
    assert err.value.reason == reason


def test_a_ragged_row_in_a_json_column_is_rejected_not_truncated(ctx):
    good = json.dumps(LISTS)
    ragged = json.dumps([LISTS[0], LISTS[1], LISTS[2][:2]])
    STRUCT.materialise(good, {}, ctx)
    with pytest.raises(RejectRow, match="ragged table: row 2 has 2 cells, the header has 3"):
        STRUCT.materialise(ragged, {}, ctx)


def _rows(n: int) -> list[list]:
    return [["city", "count"]] + [[f"town {w}", i] for i, w in enumerate("one two three four five six".split()[:n])]


def test_max_length_keeps_whole_rows(ctx, vocab):
    table = _rows(5)
    lin = STRUCT.linearise(table, {})
    full = vocab.encode_text(lin.text())
    two = vocab.encode_text(lin.text(2))
    for limit in (len(two), len(vocab.encode_text(lin.text(3))) - 1):  # fits 2 rows, not 3
        out = STRUCT.materialise(table, {"max_length": limit}, ctx)
        assert out.array.tolist() == two and out.ref == lin.text(2)
        assert out.ref.endswith("town two : 1")
        assert out.meta == {"truncated": {"kept": 2, "of": 5}}
        assert full[: len(two)] == two  # whole rows are a prefix of the full ids
    out = STRUCT.materialise(table, {"max_length": len(full)}, ctx)
    assert out.array.tolist() == full and out.meta is None


def test_max_length_below_the_first_row_cuts_tokens(ctx, vocab):
    table = _rows(3)
    full = vocab.encode_text(STRUCT.linearise(table, {}).text())
    out = STRUCT.materialise(table, {"max_length": 5}, ctx)
    assert out.array.tolist() == full[:5]
    assert out.meta == {"truncated": {"kept": 0, "of": 3}}
    assert out.ref == vocab.decode_text(full[:5])


def test_max_length_keeps_whole_tables_of_a_schema(ctx, vocab):
    value = {"db_id": "db", "database": "x.sqlite", "tables": SCHEMA}
    first = vocab.encode_text("db | Album : AlbumId , Title , ArtistId")
    out = STRUCT.materialise(value, {"max_length": len(first) + 2}, ctx)
    assert out.ref == "db | Album : AlbumId , Title , ArtistId"
    assert out.meta == {"database": "x.sqlite", "truncated": {"kept": 1, "of": 2}}


def test_text_for_vocab_is_the_linearisation(ctx):
    assert Struct().text_for_vocab(json.dumps(LISTS), {}) == TABLE_TEXT
    assert Struct().text_for_vocab(json.dumps(SCHEMA), {"uncased": True}) == SCHEMA_TEXT.lower()
    assert Struct().text_for_vocab("[1, 2", {}) is None  # bad values are skipped (materialisation rejects them)
    assert MODALITIES["TEXT"].text_for_vocab("as is", {}) == "as is"


def test_the_vocabulary_corpus_holds_linearised_structs(tmp_path):
    from stages.vocab_text import write_task_corpus

    pq.write_table(pa.table({"q": ["how many?", "who?"], "db": [json.dumps(SCHEMA), "{not json"],
                             "t": [json.dumps(LISTS), json.dumps(LISTS)]}), tmp_path / "train.parquet")
    write_task_corpus("[TEXT:q] [STRUCT:db,uncased] -> [TEXT:t]", tmp_path, tmp_path / "corpus")
    texts = [json.loads(line) for line in (tmp_path / "corpus" / "texts.jsonl").read_text().splitlines()]
    assert SCHEMA_TEXT.lower() in texts  # the linearised schema, not its JSON text
    assert json.dumps(SCHEMA) not in texts and "{not json" not in texts
    assert texts.count(json.dumps(LISTS)) == 2  # a TEXT column stays as it is
    assert {"how many?", "who?"} <= set(texts)


def test_struct_is_supported_with_ofasys_preprocess_and_adaptor_names():
    assert STRUCT.status is None and STRUCT.token_run and STRUCT.text_values
    assert STRUCT.preprocess == {"default": None, "table": None, "database": None}
    assert STRUCT.adaptors == {"default": None, "text": None}
    ins = parse_instruction('<BOS> " [TEXT:src] " ; structured knowledge: " [STRUCT:database,max_length=876] " . '
                            'generating sql code. <EOS> -> <BOS> [TEXT:tgt] <EOS>')  # OFASys's text-to-sql
    [struct] = [m for m in plan_members(ins) if m.modality == "STRUCT"]
    assert struct.attrs == {"max_length": 876}
    [struct] = [m for m in plan_members(parse_instruction("[STRUCT:t,preprocess=table,uncased] -> [TEXT:x]"))
                if m.modality == "STRUCT"]
    assert struct.attrs == {"preprocess": "table", "uncased": True}  # preprocess shapes the stored ids


def test_output_step_and_decoding_are_text(ctx, vocab):
    step = STRUCT.output_step("t", {"max_length": 40}, vocab, terminator=2, closed_labels=None, default_max=64)
    assert (step.kind, step.column, step.modality) == ("run", "t", "STRUCT")
    assert step.allowed == vocab.text_range and step.terminator == 2 and step.max_length == 40
    ids = STRUCT.materialise(LISTS, {}, ctx).array.tolist()
    assert STRUCT.decode_output([1, *ids, 2], vocab, {}) == TABLE_TEXT
