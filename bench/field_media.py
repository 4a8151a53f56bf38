"""The demo's rows with their media at the sizes real corpora have, for `decode_raw.py`'s second measure.

The demo draws 64-px images and 48-px clips of 8-12 frames so that a CPU trains on them in minutes.
Real corpora hold photographs (COCO's are ~640x480 JPEG) and clips of seconds (MSR-VTT, Kinetics:
320x240 and up, 25 fps), and decoding those every epoch is what materialisation saves. So the bench
also measures the demo's rows re-encoded at such sizes: each image upscaled (bicubic) to 640x480 and
saved as JPEG (quality 90); each clip's frames upscaled to 320x240, each held for `HOLD` frames (a
clip of 8-12 frames becomes 1.6-2.4 s at 25 fps) and re-encoded as mp4. The rows are materialised with
their task's own instruction and settings into a temp dir, so both paths read the same rows.

Audio is left as the demo has it: its clips are already real speech lengths for the model, and a
longer one would be rejected by the demo model's position budget.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image as PILImage

FIELD_IMAGE = (640, 480)
"""Width x height of a field-size photograph."""
JPEG_QUALITY = 90
FIELD_VIDEO = (320, 240)
"""Width x height of a field-size clip."""
HOLD = 5
"""Frames each demo frame is held for at `FIELD_FPS`."""
FIELD_FPS = 25


def field_image(value: Any) -> bytes:
    """A raw image value as a `FIELD_IMAGE` JPEG."""
    from ofasys.modalities.image import open_image, to_rgb

    img = to_rgb(open_image(value)).resize(FIELD_IMAGE, PILImage.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def field_video(value: bytes) -> bytes:
    """A clip's bytes as a `FIELD_VIDEO` mp4 at `FIELD_FPS`, each frame held `HOLD` times."""
    import av

    from pipeline.demo.video import encode

    with av.open(io.BytesIO(value)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    big = [np.asarray(PILImage.fromarray(f).resize(FIELD_VIDEO, PILImage.Resampling.BICUBIC)) for f in frames]
    return encode(tuple(f for f in big for _ in range(HOLD)), "mp4", FIELD_FPS)


FIELD_ENCODERS = {"IMAGE": field_image, "VIDEO": field_video}
"""Input modality -> how its raw values are re-encoded at field size."""


def make_field_task(manifest_path: Path, raw_train: Path, rows: int, vocab_path: Path, model: Any,
                    out_dir: Path) -> tuple[Path, Path]:
    """Re-encode the first `rows` train rows of a materialised task (`manifest_path`, its raw parquet
    `raw_train`) at field size under `out_dir`/raw/<task>, materialise them like the pipeline does into
    `out_dir`/shards/<task>, and return (the new manifest, the raw root for `decode_raw.raw_rows`)."""
    import json

    from ofasys.data.materialise import MaterialiseConfig, materialise_task

    manifest = json.loads(manifest_path.read_text())
    task = manifest["task"]
    table = pq.read_table(raw_train).slice(0, rows).to_pydict()
    for slot in manifest["slots"]:
        encode = FIELD_ENCODERS.get(slot["modality"])
        if encode is not None and slot["side"] == "input":
            table[slot["column"]] = [encode(v) for v in table[slot["column"]]]
    raw = out_dir / "raw" / task
    raw.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), raw / "train.parquet")
    report = materialise_task(MaterialiseConfig(
        task=task, instruction=manifest["instruction"], raw_splits={"train": raw / "train.parquet"},
        vocab_path=vocab_path, out_dir=out_dir / "shards" / task, image_size=int(manifest.get("image_size") or 64),
        shard_samples=rows, reject_budget=0, seed=int(manifest["seed"]), model=model, progress=False))
    return report.manifest_path, out_dir / "raw"
