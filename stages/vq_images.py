"""Stage `vq_images@<task>`: the train (and valid) images one task gives the VQ image tokenizer ->
data/vq_images/<task>/.

For a task in the VQ's tasks (`assets.vq.tasks`, else the tasks that store images as codes): every
image of its IMAGE columns, decoded and resized to `assets.vq.image_size` as the `image_vqgan` slots
will be, in `train.npy` (what the tokenizer learns) and `valid.npy` (what its reconstruction error is
measured on), uint8 N x S x S x 3, with `report.json` (counts, and images that could not be decoded,
which are skipped as materialisation will reject them). Any other task gets an empty directory, so
adding it leaves `data/vq_images`, and so the tokenizer and every task's codes, as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ofasys.data.io import atomic_write_bytes, atomic_write_json, npy_bytes
from ofasys.data.provenance import SOURCE, MediaBase
from ofasys.modalities import RejectRow
from ofasys.modalities.image import open_image, square_rgb
from pipeline.params_checks import effective_vq_config, image_columns, vq_task_names
from stages import cli

log = logging.getLogger("vq_images")

RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/vq_images")
SPLITS = ("train", "valid")


def split_images(raw: Path, columns: list[str], size: int) -> tuple[np.ndarray, int]:
    """(N x size x size x 3 uint8 of every decodable image of `columns`, rows in order; images skipped)."""
    present = set(pq.read_schema(raw).names)
    wanted = [c for c in columns if c in present] + ([SOURCE] if SOURCE in present else [])
    table = pq.read_table(raw, columns=wanted)
    media = MediaBase(raw.resolve().parent)
    out, skipped = [], 0
    rows = table.to_pylist()
    for row in rows:
        base = media(row.get(SOURCE))
        for column in columns:
            if column not in row:
                continue
            try:
                out.append(square_rgb(open_image(row[column], base), size))
            except RejectRow:
                skipped += 1
    images = np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
    return images, skipped


def main(args, params) -> None:
    if args.task not in params.tasks:
        raise cli.ParamsError(f"--task {args.task!r} is not in params tasks: {', '.join(params.tasks)}")
    out = OUT_DIR / args.task
    out.mkdir(parents=True, exist_ok=True)
    if args.task not in vq_task_names(params):
        for stale in out.iterdir():  # left by a run from when the task was in the list
            stale.unlink()
        log.info("%s: not one of the VQ tokenizer's tasks; it adds no images", args.task)
        return
    size = effective_vq_config(params).image_size
    columns = image_columns(params.tasks[args.task].instruction)
    report = {"task": args.task, "columns": columns, "image_size": size}
    for split in SPLITS:
        images, skipped = split_images(RAW_DIR / args.task / f"{split}.parquet", columns, size)
        atomic_write_bytes(out / f"{split}.npy", npy_bytes(images))
        report[split] = {"images": int(len(images)), "skipped": skipped}
        log.info("%s/%s: %d images at %d px for the VQ tokenizer (%d undecodable, skipped)", args.task, split,
                 len(images), size, skipped)
    atomic_write_json(out / "report.json", report)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--task", required=True)
    cli.run(main, p.parse_args())
