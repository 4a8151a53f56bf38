"""Text-to-SQL metrics: normalised exact match and execution accuracy on a real SQLite file."""

from __future__ import annotations

import pytest

from ofasys import metrics as m


from tests.metrics.conftest import COUNT_ACCEPT


def test_normalise_sql_ignores_spacing_keyword_and_identifier_case_but_not_literals():
    a = m.normalise_sql(COUNT_ACCEPT)
    assert m.normalise_sql("select count(*)  from album where artistid=(select ARTISTID from ARTIST "
                           "where name = 'Accept');") == a
    assert m.normalise_sql(COUNT_ACCEPT.replace("'Accept'", "'accept'")) != a
    assert m.normalise_sql("SELECT  ((  broken") == "SELECT (( broken"  # unparsable: whitespace only
    assert m.normalise_sql(None) is None


def test_sql_exact_match_counts_normalised_equal_queries():
    golds = [COUNT_ACCEPT, "SELECT Name FROM Artist"]
    spaced = COUNT_ACCEPT.replace("SELECT", "select  ").replace("Album", "ALBUM")
    assert m.sql_exact_match([spaced, "SELECT Title FROM Album"], golds) == 0.5
    assert m.sql_exact_match([None, "select name from artist;"], golds) == 0.5


def test_execution_accuracy_compares_result_sets(music_db):
    db = [str(music_db)]
    assert m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], db) == 1.0
    # a different query with the same result is right; another result is wrong
    assert m.execution_accuracy(["SELECT 2"], [COUNT_ACCEPT], db) == 1.0
    assert m.execution_accuracy(["SELECT 2.0"], [COUNT_ACCEPT], db) == 1.0  # 2 == 2.0
    assert m.execution_accuracy(["SELECT 3"], [COUNT_ACCEPT], db) == 0.0
    # rows as a multiset unless the gold orders them
    gold = "SELECT Title FROM Album WHERE ArtistId = 1"
    assert m.execution_accuracy([gold + " ORDER BY AlbumId DESC"], [gold], db) == 1.0
    assert m.execution_accuracy([gold + " ORDER BY AlbumId DESC"], [gold + " ORDER BY AlbumId"], db) == 0.0
    assert m.execution_accuracy(["SELECT Title FROM Album WHERE ArtistId = 1 UNION ALL SELECT 'x'"], [gold], db) == 0.0
    assert m.execution_accuracy(["SELECT Title, AlbumId FROM Album WHERE ArtistId = 1"], [gold], db) == 0.0


@pytest.mark.parametrize("pred", [
    None, "", "SELEC COUNT(*) FROM Album", "SELECT COUNT(*) FROM Albums", "SELECT 2; DELETE FROM Album",
    "DELETE FROM Album", "DROP TABLE Album", "UPDATE Album SET Title = 'x'", "INSERT INTO Artist VALUES (9, 'x')",
    "CREATE TABLE t (x)", "ATTACH DATABASE 'other.sqlite' AS other", "PRAGMA writable_schema = ON",
    "SELECT 2\x00", "SELECT randomblob(1000000000)", "SELECT 99999999999999999999999 * 99999999999999999999",
])
def test_failing_or_writing_predictions_are_wrong_and_leave_the_database_alone(music_db, pred, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.chdir(tmp_path)  # where an ATTACH would create its file
    before = hashlib.sha256(music_db.read_bytes()).hexdigest()
    assert m.execution_accuracy([pred], [COUNT_ACCEPT], [str(music_db)]) == 0.0
    assert hashlib.sha256(music_db.read_bytes()).hexdigest() == before
    assert not (tmp_path / "other.sqlite").exists()


def test_a_runaway_query_is_stopped_by_the_time_limit(music_db):
    import time

    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    start = time.monotonic()
    assert m.execution_accuracy([endless], [COUNT_ACCEPT], [str(music_db)], seconds=0.3) == 0.0
    assert time.monotonic() - start < 5
    huge = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
    assert m.execution_accuracy([huge], [COUNT_ACCEPT], [str(music_db)], seconds=30) == 0.0  # > MAX_RESULT_ROWS


def test_gold_failures_and_missing_databases_are_errors(music_db, tmp_path):
    with pytest.raises(ValueError, match="the gold query 'SELECT nope FROM Album' fails"):
        m.execution_accuracy([COUNT_ACCEPT], ["SELECT nope FROM Album"], [str(music_db)])
    with pytest.raises(FileNotFoundError, match="database .*missing.sqlite not found"):
        m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], [str(tmp_path / "missing.sqlite")])
    with pytest.raises(ValueError, match="1 references but 2 databases"):
        m.execution_accuracy([COUNT_ACCEPT], [COUNT_ACCEPT], [str(music_db)] * 2)
