"""Stage `vq`: the VQ image tokenizer -> assets/vq/ (`vq.safetensors`, `report.json`).

With `assets.vq` in params, it trains `ofasys.vq` on the train images `vq_images@<task>` collected
(tasks in name order, so params order does not matter), seeded by the top-level seed, or, with
`assets.vq.path`, verifies the user's file and copies it here, so every later stage reads one place.
`report.json` holds the fingerprint the manifests record, the config, and the reconstruction error on
the valid images beside the mean-image baseline (the error of predicting the train images' mean):
what the codes lose before any model generates them. Without `assets.vq` it writes only
`report.json` saying so (no task stores image codes).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ofasys.data.io import atomic_write_json
from pipeline.params_checks import vq_task_names
from stages import cli

log = logging.getLogger("vq")

IMAGES_DIR = Path("data/vq_images")
OUT_DIR = Path("assets/vq")
VQ_FILE = OUT_DIR / "vq.safetensors"
REPORT_FILE = OUT_DIR / "report.json"


def _images(tasks: tuple[str, ...], split: str) -> np.ndarray:
    parts = []
    for task in sorted(tasks):
        path = IMAGES_DIR / task / f"{split}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the images of task {task!r} for the VQ tokenizer are missing; "
                                    f"run `dvc repro vq_images@{task}` (or `dvc repro vq`) first")
        parts.append(np.load(path, allow_pickle=False))
    return np.concatenate(parts) if parts else np.zeros((0, 1, 1, 3), np.uint8)


def quality(tokenizer, valid: np.ndarray, train: np.ndarray) -> dict:
    """Reconstruction error on held-out images, the mean-image baseline, and how many codes they use."""
    if not len(valid):
        return {"valid_images": 0}
    codes = tokenizer.encode(valid)
    mean = train.astype(np.float64).mean(0) if len(train) else np.full(valid.shape[1:], 127.5)
    return {"valid_images": int(len(valid)),
            "reconstruction_error": round(tokenizer.reconstruction_error(valid), 4),
            "mean_image_error": round(float(np.abs(valid.astype(np.float64) - mean).mean()), 4),
            "codes_used": int(len(np.unique(codes)))}


def main(args, params) -> None:
    from ofasys.vq import load_vq, save_vq, train_vq

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    vq = params.assets.vq
    if vq is None:
        VQ_FILE.unlink(missing_ok=True)
        atomic_write_json(REPORT_FILE, {"enabled": False})
        log.info("no assets.vq in params: no VQ image tokenizer")
        return
    tasks = vq_task_names(params)
    started = time.monotonic()
    train = _images(tasks, "train")
    if vq.path:
        tokenizer = load_vq(vq.path)
        tmp = VQ_FILE.with_name(f".{VQ_FILE.name}.tmp")
        shutil.copyfile(vq.path, tmp)
        tmp.replace(VQ_FILE)
        fingerprint, source = tokenizer.fingerprint, {"path": vq.path}
        log.info("using the VQ tokenizer at %s (fingerprint %s)", vq.path, fingerprint[:12])
    else:
        config = vq.config(params.seed)
        log.info("training the VQ tokenizer on %d images of %s: %d x %d codes of %d, %d updates", len(train),
                 ", ".join(sorted(tasks)), config.grid, config.grid, config.codebook_size, config.steps)
        tokenizer = train_vq(train, config, progress=lambda step, loss: log.info("step %d loss %.4f", step, loss))
        fingerprint, source = save_vq(tokenizer, VQ_FILE), {"train_images": int(len(train))}
    report = {"enabled": True, "fingerprint": fingerprint, "config": asdict(tokenizer.config), "tasks": sorted(tasks),
              **source, **quality(tokenizer, _images(tasks, "valid"), train),
              "seconds": round(time.monotonic() - started, 1)}
    atomic_write_json(REPORT_FILE, report)
    log.info("VQ tokenizer %s: reconstruction error %s on %s valid images (mean image: %s), %s codes used",
             fingerprint[:12], report.get("reconstruction_error"), report.get("valid_images"),
             report.get("mean_image_error"), report.get("codes_used"))


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
