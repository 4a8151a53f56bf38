"""Stage `infer`: batch predictions over one shard manifest -> predictions/<task>.parquet.

One row per sample with its key, the prediction, the reference and all decoded outputs (JSON).
Resumable: finished chunks are kept under .cache/infer and a rerun continues where it stopped.
`--model models:/<name>@<alias>` is looked up in the store of params `tracking.uri` (a relative sqlite
path there is relative to the project dir, where the stage runs), never in one found by accident.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages import cli

log = logging.getLogger("infer")


def main(args, params) -> None:
    from tqdm import tqdm

    from ofasys.batch_inference import BatchInferenceConfig, predict_to_parquet
    from ofasys.data.task_data import ShardTaskData
    from ofasys.inference import OFASys
    from pipeline.registry import REGISTRY_SCHEME, from_registry
    from pipeline.tracking import project_root, store_uri

    task = args.task or params.infer.task
    split = args.split or params.infer.split
    manifest = Path(args.manifest) if args.manifest else Path("data/shards") / task / "manifest.json"
    if args.model.startswith(REGISTRY_SCHEME):
        pretrained = from_registry(args.model, tracking_uri=store_uri(params.tracking.uri, project_root()))
    else:
        pretrained = OFASys.from_pretrained(args.model)
    data = ShardTaskData(manifest, split, pretrained.vocab)
    cfg = BatchInferenceConfig(beam_size=params.infer.beam_size, batch_size=params.infer.batch_size)
    out = Path("predictions") / f"{data.name}.parquet"
    with tqdm(total=len(data), desc=f"infer {data.name}/{split}", unit="sample") as bar:
        path, preds = predict_to_parquet(pretrained.model, data, out, Path(".cache/infer"), cfg, progress=bar.update)
    log.info("wrote %d predictions to %s", len(preds), path)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--model", default="checkpoints/final", help="pretrained dir or models:/<name>@<alias>")
    p.add_argument("--manifest", default=None, help="any shard manifest (default: the infer.task's)")
    p.add_argument("--task", default=None, help="override infer.task")
    p.add_argument("--split", default=None, help="override infer.split")
    cli.run(main, p.parse_args())
