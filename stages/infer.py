"""Stage `infer`: batch predictions over shard manifests -> predictions/<task>.parquet, one per task.

Every task of `infer.tasks` (default: all) gets its own file, so predicting one task never deletes
another's. A row holds the sample's key and the id a user finds it by (the source's own `id` column,
else its row in the source file), what each input held (`input.<column>`: text, or a media path),
the scored output (`prediction`: text, a box, a label; for a generated image, motion or speech also
the path of its `.png`, `.npz` or `.wav` in the `image`, `motion` or `audio` column, beside the `.npy`
of its raw frames), its `reference`, the per-sample `score` by the task's metric, and every decoded
output as JSON.

Resumable: finished chunks are kept under .cache/infer and a rerun continues where it stopped.
`--model models:/<name>@<alias>` is looked up in the store of params `tracking.uri` (a relative sqlite
path there is relative to the project dir, where the stage runs), never in one found by accident.
`--manifest` predicts over any shard manifest instead (scored when its task is one of params').
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages import cli

log = logging.getLogger("infer")

OUT = Path("predictions")


def output_field(data, column: str) -> str | None:
    """The typed field (`text`, `box`, `image`, ...) of a task's output column."""
    from ofasys.data.members import slot_handler

    for side, slot in data.instruction.templates[0].slots():
        if side == "output" and slot.column == column:
            return slot_handler(slot).output_field
    return None


def write_pngs(pretrained, codes: list, keys: list[str], out_dir: Path) -> list[str | None]:
    """Generated code grids decoded to PNG files `<out_dir>/<key>.png` (atomically); their paths, None
    where generation was cut before the grid was complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str | None] = []
    for start in range(0, len(codes), 256):
        images = pretrained.render_images(codes[start : start + 256])
        for key, image in zip(keys[start : start + 256], images):
            if image is None:
                paths.append(None)
                continue
            path = out_dir / f"{key}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            paths.append(str(path))
    return paths


def predict_task(pretrained, manifest: Path, split: str, metric: str | None, params) -> None:
    """Predict one manifest's split into predictions/<task>.parquet and score each row by `metric`."""
    from tqdm import tqdm

    from ofasys.batch_inference import (BatchInferenceConfig, add_column, load_frames, predict_to_parquet,
                                        save_frame_outputs)
    from ofasys.data.task_data import ShardTaskData
    from ofasys.evaluation import input_texts, is_frame_output, primary_output, references, sample_databases
    from ofasys.metrics import registry

    data = ShardTaskData(manifest, split, pretrained.vocab)
    cfg = BatchInferenceConfig(beam_size=params.infer.beam_size, batch_size=params.infer.batch_size)
    with tqdm(total=len(data), desc=f"infer {data.name}/{split}", unit="sample") as bar:
        path, preds = predict_to_parquet(pretrained.model, data, OUT / f"{data.name}.parquet", Path(".cache/infer"),
                                         cfg, progress=bar.update)
    column = primary_output(data)
    frames = is_frame_output(data, column)
    refs = references(data, column, len(preds)) if frames else [p.refs.get(column) for p in preds]
    outputs = [p.outputs.get(column) for p in preds]
    field = output_field(data, column)
    if field == "image":
        add_column(path, "image", write_pngs(pretrained, outputs, [p.key for p in preds], OUT / data.name))
    if frames:  # a motion's .npz, speech's .wav, beside the .npy of the raw frames
        add_column(path, field, save_frame_outputs(data, column, outputs, [p.key for p in preds], OUT / data.name))
        outputs = [load_frames(v) for v in outputs]
    needs = registry.needs(metric) if metric is not None else frozenset()
    if "transcribe" in needs:
        log.info("%s: rows not scored: %s transcribes with the speech recognition task (the evaluate stage "
                 "scores it)", data.name, metric)
    elif metric is not None and preds and all(r is not None for r in refs):  # a split with references
        decoder = pretrained.image_codes.decode if "image_decoder" in needs and pretrained.image_codes else None
        databases = sample_databases(data, len(preds)) if "databases" in needs else None
        texts = input_texts(data, len(preds)) if "input_texts" in needs else None
        add_column(path, "score", registry.sample_scores(
            metric, outputs, registry.EvalData(refs, databases=databases, image_decoder=decoder, input_texts=texts)))
    log.info("wrote %d predictions to %s%s", len(preds), path, f", scored by {metric}" if metric else "")


def main(args, params) -> None:
    from ofasys.inference import OFASys
    from pipeline.registry import REGISTRY_SCHEME, from_registry
    from pipeline.tracking import project_root, store_uri

    if args.model.startswith(REGISTRY_SCHEME):
        pretrained = from_registry(args.model, tracking_uri=store_uri(params.tracking.uri, project_root()))
    else:
        pretrained = OFASys.from_pretrained(args.model)
    split = args.split or params.infer.split
    if args.manifest:
        import json

        manifest = Path(args.manifest)
        task = json.loads(manifest.read_text()).get("task") if manifest.is_file() else None
        metric = params.tasks[task].metric if task in params.tasks else None
        predict_task(pretrained, manifest, split, metric, params)
        return
    for name in ([args.task] if args.task else params.infer.tasks):
        if name not in params.tasks:
            raise cli.ParamsError(f"--task: {name!r} is not a task; tasks: {', '.join(params.tasks)}")
        predict_task(pretrained, Path("data/shards") / name / "manifest.json", split, params.tasks[name].metric, params)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--model", default="checkpoints/final", help="pretrained dir or models:/<name>@<alias>")
    p.add_argument("--manifest", default=None, help="any shard manifest (default: those of infer.tasks)")
    p.add_argument("--task", default=None, help="predict this task only (default: infer.tasks)")
    p.add_argument("--split", default=None, help="override infer.split")
    cli.run(main, p.parse_args())
