"""Stage `ingest@<task>`: raw source (demo generator or a file) -> data/raw/<task>/{split}.parquet.

Runs in the project directory: relative source paths in params are relative to it, and the raw rows'
`__source__` keeps them relative, so the raw splits do not depend on where the project is checked out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.sources import ingest
from stages import cli

log = logging.getLogger("ingest")


def main(args, params) -> None:
    if args.task not in params.tasks:
        raise cli.ParamsError(f"--task {args.task!r} is not in params tasks: {', '.join(params.tasks)}")
    task = params.tasks[args.task]
    counts = ingest(task.source, seed=params.seed, out_dir=Path("data/raw") / args.task,
                    key=f"tasks.{args.task}.source")
    log.info("%s: %s", args.task, ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.run(main, p.parse_args())
