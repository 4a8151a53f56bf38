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

import pyarrow as pa

from pipeline.demo.tasks import GENERATORS, table_meta

__all__ = ["GENERATORS", "generate", "table_meta"]


def generate(name: str, split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """Rows `0..size-1` of demo task `name` for `split` ("train" | "valid" | "test").

    Same arguments -> identical table (and identical parquet bytes when written with fixed options).
    `corrupt` rows get invalid content at seed-determined positions (see `pipeline.demo.tasks`).
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown demo generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name](split, int(size), int(seed), int(corrupt))
