"""Stage `materialise@<task>`: instruction + raw splits + assets -> WebDataset shards + manifest + rejects.

Samples are checked against the model that will train on them (`model.max_positions`, the positions
each embedded slot takes in the model's adaptors), so a sample the model can't take is a rejected
row here, not a crash mid-training; the lengths files hold each sample's encoder and decoder positions
in that model, which `train.max_tokens` budgets. `materialise.num_workers` processes decode rows while
this one writes them in order: the shards are the same bytes for any number.
"""

from __future__ import annotations

# Only light imports at the top: each worker process starts by importing this module again ('spawn').
import logging
from pathlib import Path

log = logging.getLogger("materialise")

SPLITS = ("train", "valid", "test")
VOCAB_PATH = Path("assets/vocab.json")
VQ_PATH = Path("assets/vq/vq.safetensors")
"""The VQ image tokenizer (stage `vq`), for tasks that store images as codes."""


def main(args, params) -> None:
    import torch

    from ofasys.data.materialise import MaterialiseConfig, materialise_task
    from ofasys.vocab import UnifiedVocab
    from pipeline import run_config
    from stages import cli

    # Features (audio fbank) are computed one small row at a time: one thread is faster than two
    # fighting over the cores; `materialise.num_workers` processes (one thread each) are the parallelism.
    torch.set_num_threads(1)
    if args.task not in params.tasks:
        raise cli.ParamsError(f"--task {args.task!r} is not in params tasks: {', '.join(params.tasks)}")
    task = params.tasks[args.task]
    raw = Path("data/raw") / args.task
    model = run_config.model_config(params, UnifiedVocab.load(VOCAB_PATH).size)
    config = MaterialiseConfig(
        task=args.task,
        instruction=task.instruction,
        raw_splits={split: raw / f"{split}.parquet" for split in SPLITS},
        vocab_path=VOCAB_PATH,
        out_dir=Path("data/shards") / args.task,
        image_size=task.image_size,
        shard_samples=params.materialise.shard_samples,
        reject_budget=params.materialise.reject_budget,
        num_workers=params.materialise.num_workers,
        params_hash=run_config.task_hash(params, args.task),
        seed=params.seed,
        model=model,
        image_codes_path=VQ_PATH if VQ_PATH.is_file() else None,
    )
    report = materialise_task(config)
    log.info("%s: %s", args.task, report)


if __name__ == "__main__":
    from stages import cli

    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.run(main, p.parse_args())
