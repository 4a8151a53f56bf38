"""Fixtures of the metric tests: a small real SQLite database."""

from __future__ import annotations

import pytest

COUNT_ACCEPT = "SELECT COUNT(*) FROM Album WHERE ArtistId = (SELECT ArtistId FROM Artist WHERE Name = 'Accept')"


@pytest.fixture
def music_db(tmp_path):
    """A small real SQLite database: 3 artists, 4 albums."""
    import sqlite3

    path = tmp_path / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE Artist (ArtistId INTEGER PRIMARY KEY, Name TEXT);
        CREATE TABLE Album (AlbumId INTEGER PRIMARY KEY, Title TEXT, ArtistId INTEGER);
        INSERT INTO Artist VALUES (1, 'AC/DC'), (2, 'Accept'), (3, 'Aerosmith');
        INSERT INTO Album VALUES (1, 'For Those About To Rock', 1), (2, 'Balls to the Wall', 2),
                                 (3, 'Restless and Wild', 2), (4, 'Let There Be Rock', 1);
    """)
    conn.commit()
    conn.close()
    return path
