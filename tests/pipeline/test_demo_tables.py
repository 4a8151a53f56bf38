"""The table and database demos: real cars and the real Chinook database, held-out names, damage that
STRUCT rejects, and rows that materialise, collate and score through the real pipeline code."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.rejects import read_rejects
from ofasys.data.task_data import ShardTaskData
from ofasys.modalities import MODALITIES, RejectRow
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from pipeline.demo import generate, table_meta, tables
from pipeline.sources import add_provenance

STRUCT = MODALITIES["STRUCT"]
TABLE_TO_TEXT = ('<BOS> structured knowledge: " [STRUCT:table,preprocess=table,uncased] " . how to describe the '
                 'table? <EOS> -> <BOS> [TEXT:text] <EOS>')
TEXT_TO_SQL = ('<BOS> " [TEXT:question] " ; structured knowledge: " [STRUCT:schema,preprocess=database] " . '
               'generating sql code. <EOS> -> <BOS> [TEXT:sql] <EOS>')
"""The instructions proposed for params.yaml (OFASys's table-to-text and text-to-sql prompts)."""


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    return buf.getvalue()


@pytest.fixture(scope="module")
def database() -> str:
    return tables.chinook_database()


# ----- table_to_text ------------------------------------------------------------------------------

def test_cars_come_from_the_vega_datasets_wheel_and_are_partitioned_by_name():
    path = tables.cars_file()
    assert path.name == "cars.json" and "vega_datasets" in path.parts
    cars = tables.cars()
    assert len(cars) == 400  # 406 cars, 6 without horsepower
    assert cars[0] == tables.Car("chevrolet chevelle malibu", 8, 130)
    pools = {s: {c.name for c in tables.car_pool(s)} for s in tables.SPLITS}
    assert not pools["train"] & pools["valid"] and not pools["train"] & pools["test"] and not pools["valid"] & pools["test"]
    assert sum(len(tables.car_pool(s)) for s in tables.SPLITS) == len(cars)
    assert len(pools["test"]) >= 20 and len(pools["valid"]) >= 20


def test_table_to_text_rows_describe_their_one_row_table():
    table = generate("table_to_text", "test", 30, seed=3)
    assert table.column_names == ["table", "text"]
    test_cars = set(tables.car_pool("test"))
    forms = set()
    for row, rec in enumerate(table.to_pylist()):
        value = json.loads(rec["table"])
        forms.add(type(value[0]).__name__)
        assert isinstance(value[0], dict) == (row % 2 == 0)  # row mappings and header + lists alternate
        lin = STRUCT.linearise(rec["table"], {"preprocess": "table"})
        [cells] = lin.units
        name, cylinders, horsepower = cells.split(" : ")
        car = tables.Car(name, int(cylinders), int(horsepower))
        assert car in test_cars  # a held-out car (names repeat within a split, with other figures)
        assert rec["text"] == f"the {name} has {cylinders} cylinders and {horsepower} horsepower" == car.sentence()
        assert lin.prefix == "[table head] Name : Cylinders : Horsepower [table content] "
    assert forms == {"dict", "list"}
    assert len(set(table.column("text").to_pylist())) > 15


def test_table_to_text_damage_is_a_ragged_table_struct_rejects():
    table = generate("table_to_text", "train", 20, seed=5, corrupt=3)
    bad = table_meta(table)["corrupt_rows"]
    assert len(bad) == 3
    for row, rec in enumerate(table.to_pylist()):
        if row in bad:
            with pytest.raises(RejectRow, match="ragged table: row 1 has 2 cells, the header has 3"):
                STRUCT.linearise(rec["table"], {})
        else:
            STRUCT.linearise(rec["table"], {})
    assert table_meta(table)["cars_sha256"] == hashlib.sha256(tables.cars_file().read_bytes()).hexdigest()


# ----- Chinook --------------------------------------------------------------------------------------

def test_the_fixture_is_checked_and_builds_the_real_chinook_deterministically(tmp_path):
    fixture = tables.chinook_fixture()
    assert hashlib.sha256(fixture).hexdigest() == tables.FIXTURE_SHA256
    tables.build_chinook(fixture, tmp_path / "a.sqlite")
    tables.build_chinook(fixture, tmp_path / "b.sqlite")
    assert (tmp_path / "a.sqlite").read_bytes() == (tmp_path / "b.sqlite").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for _, t, _, _ in tables.CHINOOK_TABLES}
    assert counts == {"Artist": 275, "Album": 347, "Genre": 25, "MediaType": 5, "Track": 3503, "Playlist": 18,
                      "PlaylistTrack": 8715, "Employee": 8, "Customer": 59, "Invoice": 412, "InvoiceLine": 2240}
    assert conn.execute("SELECT Name FROM Artist WHERE ArtistId = 1").fetchone() == ("AC/DC",)
    assert conn.execute("SELECT InvoiceDate, Total FROM Invoice WHERE InvoiceId = 1").fetchone() == \
        ("2007-01-01 00:00:00", 1.98)
    conn.close()


def test_a_missing_or_altered_fixture_is_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `bash scripts/setup.sh` to fetch it"):
        tables.chinook_fixture(tmp_path / "nothing.tar.gz")
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(altered, "w:gz") as tar:
        data = b"[]"
        info = tarfile.TarInfo(tables.FIXTURE_MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="the fixture's sha256 is .* expected 76e0916f"):
        tables.chinook_fixture(altered)


def test_sql_holds_out_question_name_pairs_whose_names_training_asks_otherwise(database):
    names = tables.chinook_names(database)
    for entity, by_split in names.items():
        sets = {s: set(v) for s, v in by_split.items()}
        assert not sets["train"] & sets["valid"] and not sets["train"] & sets["test"], entity
        assert not sets["valid"] & sets["test"] and sets["test"], entity
        assert all(tables.NAME_RE.fullmatch(n) and len(n) <= tables.MAX_NAME for n in sets["train"])
    pools = tables.sql_pools(database)
    for template in tables.SQL_TEMPLATES:
        [other] = [t for t in tables.SQL_TEMPLATES if t.entity == template.entity and t is not template]
        for split in ("valid", "test"):
            held = set(pools[split][template])
            assert held and not held & set(pools["train"][template])  # the pair is never trained on
            assert held <= set(pools["train"][other])  # the name is, by the other question
    train = generate("text_to_sql", "train", 4000, seed=3)
    test = generate("text_to_sql", "test", 300, seed=3)
    train_questions = set(train.column("question").to_pylist())
    assert not train_questions & set(test.column("question").to_pylist())
    train_sql = " ".join(train.column("sql").to_pylist())
    assert all(f"'{sql.split(chr(39))[1]}'" in train_sql for sql in test.column("sql").to_pylist())
    assert len(set(test.column("question").to_pylist())) > 60  # many held-out pairs, not a handful


def test_text_to_sql_gold_queries_run_on_chinook_and_name_the_asked_entity(database):
    table = generate("text_to_sql", "test", 40, seed=2)
    assert table.column_names == ["question", "schema", "sql"]
    assert table_meta(table)["database"] == database
    test_pools = tables.sql_pools(database)["test"]
    conn = sqlite3.connect(f"{(tables.ROOT / database).as_uri()}?mode=ro", uri=True)
    used_templates = set()
    for rec in table.to_pylist():
        [template] = [t for t in tables.SQL_TEMPLATES if rec["sql"].startswith(t.sql.split("'")[0])
                      and rec["question"].startswith(t.question.split("{}")[0])]
        used_templates.add(template)
        name = rec["sql"].split("'")[1]
        assert name in test_pools[template] and f"'{name}'" in rec["question"]
        assert (rec["question"], rec["sql"]) == template.fill(name)
        result = conn.execute(rec["sql"]).fetchall()
        assert result and result != [(0,)], rec["sql"]  # every question has a real answer
        schema = json.loads(rec["schema"])
        assert schema["database"] == database and list(schema["tables"]) == list(tables.SCHEMA_TABLES)
    assert len(used_templates) == len(tables.SQL_TEMPLATES)
    assert schema["tables"]["Track"][:3] == ["TrackId", "Name", "AlbumId"]


def test_ingest_builds_the_database_beside_the_splits_and_rows_name_it_there(tmp_path, monkeypatch):
    """The ingest stage's layout: the database is part of the task's raw directory (a DVC output,
    removed and rebuilt with the splits), named relative to the project directory the stages run in."""
    from pipeline.sources import SourceSpec, ingest

    monkeypatch.chdir(tmp_path)
    spec = SourceSpec(kind="demo", generator="text_to_sql", train=8, valid=2, test=3)
    ingest(spec, seed=5, out_dir=Path("data/raw/sql"))
    assert sorted(p.name for p in Path("data/raw/sql").iterdir()) == [
        "chinook.sqlite", "test.parquet", "train.parquet", "valid.parquet"]
    rows = pq.read_table("data/raw/sql/test.parquet").to_pylist()
    assert {json.loads(r["schema"])["database"] for r in rows} == {"data/raw/sql/chinook.sqlite"}
    conn = sqlite3.connect(f"{Path('data/raw/sql/chinook.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    assert all(conn.execute(r["sql"]).fetchall() for r in rows)  # the gold queries answer on that file
    conn.close()


def test_text_to_sql_damage_is_a_schema_struct_rejects():
    table = generate("text_to_sql", "train", 20, seed=4, corrupt=4)
    meta = table_meta(table)
    assert len(meta["corrupt_truncated_rows"]) == 2 and len(meta["corrupt_no_columns_rows"]) == 2
    for row, rec in enumerate(table.to_pylist()):
        if row in meta["corrupt_truncated_rows"]:
            with pytest.raises(RejectRow, match="is not valid JSON"):
                STRUCT.linearise(rec["schema"], {"preprocess": "database"})
        elif row in meta["corrupt_no_columns_rows"]:
            with pytest.raises(RejectRow, match="schema table 'Track' has no columns"):
                STRUCT.linearise(rec["schema"], {"preprocess": "database"})
        else:
            assert STRUCT.linearise(rec["schema"], {"preprocess": "database"}).prefix == "chinook | "


@pytest.mark.parametrize("name", ["table_to_text", "text_to_sql"])
def test_generation_is_deterministic_and_splits_grow_by_appending(name):
    a = generate(name, "train", 12, seed=7, corrupt=2)
    assert _parquet_bytes(a) == _parquet_bytes(generate(name, "train", 12, seed=7, corrupt=2))
    assert not a.equals(generate(name, "train", 12, seed=8, corrupt=2))
    small, large = generate(name, "valid", 5, seed=3), generate(name, "valid", 9, seed=3)
    assert large.slice(0, 5).equals(small)
    assert generate(name, "test", 0, seed=1).num_rows == 0


# ----- through the pipeline code: assets texts, materialise, collate, evaluate ------------------------

def _raw_splits(tmp_path, name, sizes, corrupt):
    splits = {}
    for split, size in sizes.items():
        table = add_provenance(generate(name, split, size, seed=11, corrupt=corrupt if split == "train" else 0),
                               f"demo:{name}")
        path = tmp_path / "raw" / name / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        splits[split] = str(path)
    return splits


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    """Both demo tasks ingested, given a BPE trained as the assets stage trains it, materialised."""
    from ofasys.model.config import ModelConfig
    from stages.vocab_text import write_task_corpus

    tmp = tmp_path_factory.mktemp("tables")
    tasks = {"table_to_text": TABLE_TO_TEXT, "text_to_sql": TEXT_TO_SQL}
    raw = {name: _raw_splits(tmp, name, {"train": 24, "test": 6}, corrupt=2) for name in tasks}
    texts = []
    for name, ins in tasks.items():
        write_task_corpus(ins, tmp / "raw" / name, tmp / "vocab_text" / name)
        texts += [json.loads(line) for line in (tmp / "vocab_text" / name / "texts.jsonl").read_text().splitlines()]
    vocab = UnifiedVocab.build(train_text_tokenizer(texts, vocab_size=700), num_bins=4)
    vocab.save(tmp / "vocab.json")
    out = {}
    for name, ins in tasks.items():
        materialise_task(MaterialiseConfig(
            task=name, instruction=ins, raw_splits=raw[name], vocab_path=str(tmp / "vocab.json"),
            out_dir=str(tmp / "shards" / name), reject_budget=0.5, progress=False, model=ModelConfig()))
        out[name] = tmp / "shards" / name / "manifest.json"
    return vocab, out, texts


def test_the_bpe_is_trained_on_linearised_tables_and_schemas(materialised):
    vocab, _, texts = materialised
    assert any(t.startswith("[table head] name : cylinders : horsepower [table content] ") for t in texts)
    assert any(t.startswith("chinook | Album : AlbumId , Title , ArtistId | Artist") for t in texts)
    assert not any(t.startswith(("[", "{")) and '"' in t for t in texts)  # no raw JSON text


@pytest.mark.parametrize("name,column,rejected", [
    ("table_to_text", "table", "ragged table: row 1 has 2 cells, the header has 3"),
    ("text_to_sql", "schema", "is not valid JSON"),
])
def test_demo_rows_materialise_reject_their_damage_and_collate(materialised, name, column, rejected):
    vocab, manifests, _ = materialised
    rejects = read_rejects(manifests[name].parent / "rejects.jsonl")
    assert len(rejects) == 2 and {r.column for r in rejects} == {column}
    assert any(rejected in r.reason for r in rejects)
    train = ShardTaskData(manifests[name], "train", vocab)
    assert len(train) == 22
    [slot] = [s for s in train.manifest["slots"] if s["modality"] == "STRUCT"]
    assert slot["attrs"]["preprocess"] == ("table" if name == "table_to_text" else "database")
    samples = [train.get(i) for i in range(4)]
    stored = samples[0].arrays[f"{column}.struct"]
    assert stored.dtype == np.int32
    text = vocab.decode_text(stored.tolist())
    assert text.startswith("[table head] name : cylinders" if name == "table_to_text" else "chinook | Album : AlbumId")
    batch = train.collate(samples, np.random.default_rng(0), train=True)
    assert len(batch) == 4 and batch.target is not None and batch.num_target_tokens() > 0
    [tokens] = [s for s in batch.segments if s.kind == "tokens"]
    assert tokens.tensor.shape[0] == 4 and tokens.mask.sum(1).min() > len(stored)  # the prompt and the struct
    row0 = tokens.tensor[0][tokens.mask[0]].tolist()
    assert any(row0[i : i + len(stored)] == stored.tolist() for i in range(len(row0)))  # STRUCT ids in the encoder


def test_sql_samples_carry_their_database_and_score_by_execution(materialised, monkeypatch):
    from ofasys.evaluation import sample_databases
    from ofasys.metrics.registry import EvalData, baseline, report, score

    vocab, manifests, _ = materialised
    test = ShardTaskData(manifests["text_to_sql"], "test", vocab)
    train = ShardTaskData(manifests["text_to_sql"], "train", vocab)
    refs = [test.get(i).meta["refs"]["sql"] for i in range(len(test))]
    train_refs = [train.get(i).meta["refs"]["sql"] for i in range(len(train))]
    databases = sample_databases(test, len(test))
    assert set(databases) == {tables.chinook_database()}
    monkeypatch.chdir(tables.ROOT)  # evaluation runs in the project directory, which stage paths are relative to
    data = EvalData(references=refs, train_references=train_refs, databases=databases)
    assert score("exec_acc", refs, data) == 1.0
    wrong = [r.replace("COUNT(*)", "COUNT(*) + 1").replace("SELECT Name", "SELECT 'x'").replace("SELECT Title", "SELECT 1")
             for r in refs]
    assert score("exec_acc", wrong, data) == 0.0
    assert 0.0 <= baseline("exec_acc", data) < 1.0
    assert report("exec_acc", refs, data)["sql_em"] == 1.0
    table = ShardTaskData(manifests["table_to_text"], "test", vocab)
    with pytest.raises(ValueError, match="names no database"):
        sample_databases(table, 1)


def test_samples_fit_the_tiny_model(materialised):
    """Positions the tiny CPU model takes in (max_positions 1024), well inside its budget on both sides."""
    vocab, manifests, _ = materialised
    for name, limit in (("table_to_text", 96), ("text_to_sql", 256)):  # prompts and specials included
        stats = json.loads(manifests[name].read_text())["splits"]["train"]["lengths"]
        assert 0 < stats["encoder"]["max"] <= limit and 0 < stats["decoder"]["max"] <= limit, (name, stats)


def test_the_evaluate_stage_scores_text_to_sql_by_execution(materialised, tmp_path, monkeypatch):
    """stages/evaluate.evaluate_task on the text-to-SQL shards with an untrained model: the entry has
    execution accuracy and its baseline (queries run on Chinook), and sql_em beside them."""
    from ofasys.model import ModelConfig, build_model
    from pipeline.params import parse_params
    from stages.evaluate import evaluate_task

    vocab, manifests, _ = materialised
    params = parse_params({
        "seed": 1,
        "tasks": {"sql": {"instruction": TEXT_TO_SQL, "metric": "exec_acc", "weight": 1.0,
                          "source": {"kind": "demo", "generator": "text_to_sql", "train": 24, "valid": 2, "test": 6}}},
        "evaluate": {"split": "test", "beam_size": 1, "batch_size": 8, "max_samples": 0},
    })
    # the stage's layout: shards under data/shards/<task>, the database path relative to the project
    (tmp_path / "data/shards").mkdir(parents=True)
    (tmp_path / "data/shards/sql").symlink_to(manifests["text_to_sql"].parent)
    monkeypatch.chdir(tmp_path)
    model = build_model(ModelConfig(vocab_size=vocab.size, d_model=32, heads=2, ffn_dim=64, encoder_layers=1,
                                    decoder_layers=1, adaptors={}), seed=0)
    entry = evaluate_task("sql", params.tasks["sql"], model, vocab, params, tmp_path / "work")
    assert entry["metric"] == "exec_acc" and entry["num_samples"] == 6 and entry["column"] == "sql"
    assert entry["exec_acc"] == 0.0  # an untrained model's SQL does not run to the right result
    assert 0.0 <= entry["exec_acc_baseline"] < 1.0 and 0.0 <= entry["sql_em_baseline"] < 1.0
    assert entry["sql_em"] == 0.0 and entry["gain"] == -entry["exec_acc_baseline"]
