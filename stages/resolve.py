"""Stage `resolve`: validate the whole params.yaml and write each stage's slice of it, with a content
fingerprint of every task's source data, to data/resolved/ (see `pipeline.stage_inputs`).

DVC runs it on every `dvc repro` (`always_changed`): it is cheap, and only it can notice that a source
file or an image it lists changed. Stages downstream re-run only when their own slice changed. A
source file that is not there is a user error found here, before any task is ingested.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from pipeline.stage_inputs import RESOLVED_DIR, media_columns, stage_slices
from stages import cli

log = logging.getLogger("resolve")

FINGERPRINT_CACHE = Path(".cache/source-fingerprints")
"""Stat cache of media file hashes, so an unchanged image is not re-read on every run."""


def write_slices(slices: dict, out_dir: Path) -> None:
    """Write every slice under a temp dir, then swap it in: readers never see a half-written set."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, value in sorted(slices.items()):
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def main(args, params) -> None:
    from pipeline.source_fingerprint import source_fingerprint
    from pipeline.sources import check_source_files

    for name, task in params.tasks.items():  # a wrong path stops the run here, before any stage works
        check_source_files(task.source, key=f"tasks.{name}.source")

    def fingerprint(name: str) -> dict:
        task = params.tasks[name]
        return source_fingerprint(task.source, media_columns(task.instruction), params.seed,
                                  cache_dir=FINGERPRINT_CACHE)

    slices = stage_slices(params, fingerprint)
    write_slices(slices, RESOLVED_DIR)
    log.info("params valid; %d stage inputs written to %s", len(slices), RESOLVED_DIR)


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
