"""The embedded demo's raw data, generated deterministically from real data that ships in packages.

Handwritten digits (scikit-learn `load_digits`) pasted on photos bundled with scikit-image give
captioning, grounding and counting-VQA rows with exact labels; Python's documentation text gives
text-infilling windows; short sentences spoken by espeak-ng (the Debian package, several voices and
speeds, stored as FLAC/WAV/Ogg bytes) give speech recognition and speech-to-phones rows, with test
sentences never heard in training (`pipeline.demo.speech`); a digit moving over a photo, encoded as
mp4/webm/gif, gives video captioning (`pipeline.demo.video`); the cars table of `vega_datasets` and
the Chinook database give table-to-text and text-to-SQL (`pipeline.demo.tables`); the labelled
humanoid motion-capture clips of `pybullet` give action recognition (`pipeline.demo.motion`).
Nothing is downloaded at run time and nothing is committed: the ingest stage calls `generate` and writes parquet. See `pipeline.demo.tasks` for the
column schemas.
"""

from __future__ import annotations

import os

import pyarrow as pa

from pipeline.demo.tasks import GENERATORS, WRITES_FILES, table_meta

__all__ = ["GENERATORS", "WRITES_FILES", "generate", "table_meta"]


def generate(name: str, split: str, size: int, seed: int, corrupt: int = 0,
             files_dir: str | os.PathLike | None = None) -> pa.Table:
    """Rows `0..size-1` of demo task `name` for `split` ("train" | "valid" | "test").

    Same arguments -> identical table (and identical parquet bytes when written with fixed options).
    `corrupt` rows get invalid content at seed-determined positions (see `pipeline.demo.tasks`).
    `files_dir`: where a generator of `WRITES_FILES` puts the file its rows name (ingest passes the
    task's raw directory, so DVC tracks the file with the splits); the others ignore it.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown demo generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    if name in WRITES_FILES:
        return GENERATORS[name](split, int(size), int(seed), int(corrupt), files_dir=files_dir)
    return GENERATORS[name](split, int(size), int(seed), int(corrupt))
