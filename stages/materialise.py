"""Stage `materialise@<task>`: instruction + raw splits + assets -> WebDataset shards + manifest + rejects.

Samples are checked against the model that will train on them (`model.max_positions`, image tokens
of the model's image stem at the task's resolution), so a sample the model can't take is a rejected
row here, not a crash mid-training.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.vocab import UnifiedVocab
from stages import cli

log = logging.getLogger("materialise")

SPLITS = ("train", "valid", "test")
VOCAB_PATH = Path("assets/vocab.json")


def main(args, params) -> None:
    if args.task not in params.tasks:
        raise cli.ParamsError(f"--task {args.task!r} is not in params tasks: {', '.join(params.tasks)}")
    task = params.tasks[args.task]
    raw = Path("data/raw") / args.task
    model = params.model_config(UnifiedVocab.load(VOCAB_PATH).size)
    config = MaterialiseConfig(
        task=args.task,
        instruction=task.instruction,
        raw_splits={split: raw / f"{split}.parquet" for split in SPLITS},
        vocab_path=VOCAB_PATH,
        out_dir=Path("data/shards") / args.task,
        image_size=task.image_size,
        shard_samples=params.materialise.shard_samples,
        reject_budget=params.materialise.reject_budget,
        params_hash=params.task_hash(args.task),
        seed=params.seed,
        max_positions=model.max_positions,
        image_tokens=model.image_tokens(task.image_size),
    )
    report = materialise_task(config)
    log.info("%s: %s", args.task, report)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.run(main, p.parse_args())
