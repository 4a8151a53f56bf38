"""What materialisation buys the loader: batches from the shards vs the same batches decoded from the
raw rows on the fly, per modality (image: PNG decode + resize; audio: WAV decode + 80-bin fbank;
video: container demux + frame decode + resize).

Both paths do what one loader worker does per micro-batch, in this one process, interleaved:
(a) read the materialised samples from the shards and collate; (b) materialise the same train rows in
memory from the raw parquet (`sample_from_row`: what a loader without materialisation repeats every
epoch) and collate. The first batch of each path is checked to hold identical tensors.

The default demo has no video task, yet the measure covers video: when the shards dir has none, a
small `video_caption` train split is made for the bench in a temporary directory (`make_video_task`):
the demo generator's clips, ingested and materialised the way the pipeline does it, with the task's
settings from params-full.yaml and the demo's vocabulary. It is a function of the seed in that file,
so every run measures the same clips; a few dozen clips are plenty because the batches measured are
drawn again in every round. The same clips are also materialised with the slot flag `jpeg_frames`
(JPEG frames, the opt-in for large corpora): its line and the two layouts' shard sizes are printed
for reference, outside the overall figure, which counts the default layout.

Each modality's line also gives the bytes of one batch of 32: the modality's tensor and all tensors,
what a loader worker hands over through shared memory and a GPU run copies to the device.

    python bench/decode_raw.py [--shards data/shards] [--raw data/raw] [--vocab assets/vocab.json]
                               [--video-params params-full.yaml] [--video-clips 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bench.field_media import FIELD_ENCODERS, FIELD_FPS, FIELD_IMAGE, FIELD_VIDEO, make_field_task
from ofasys.data.rows import sample_from_row
from ofasys.data.task_data import ShardTaskData
from ofasys.vocab import UnifiedVocab
from pipeline.params import ParamsError

BATCH = 32
KINDS = {"IMAGE": "image", "AUDIO": "audio fbank", "VIDEO": "video"}
MODALITY_OF = {kind: modality for modality, kind in KINDS.items()}
VIDEO_TASK = "video_caption"
"""The task of params-full.yaml the bench makes when the shards dir has no video task."""


def modality_tasks(shards: Path) -> dict[str, str]:
    """The first task of each embedded input modality found under `shards` (kind -> task)."""
    found: dict[str, str] = {}
    for manifest in sorted(shards.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        for slot in data["slots"]:
            kind = KINDS.get(slot["modality"])
            if kind and slot["side"] == "input" and kind not in found and "train" in data["splits"]:
                found[kind] = data["task"]
    return found


def make_video_task(out_dir: Path, vocab_path: Path, params_path: Path, clips: int, jpeg: bool = False) -> Path:
    """Make a `clips`-row train split of `VIDEO_TASK` under `out_dir` (raw/<task>/train.parquet and
    shards/<task>/...) and return its manifest path.

    What the pipeline's ingest and materialise stages do for that task, on fewer rows: the source,
    instruction, image_size, seed, shard and model settings are params-full.yaml's (read from
    `params_path`); only the row counts change (no valid/test rows, no deliberately damaged rows,
    which would be rejected and leave nothing to time). The vocabulary is `vocab_path`, the one the
    other tasks' shards were made with, so both paths tokenise captions alike. `jpeg` adds the slot
    flag `jpeg_frames` to the task's VIDEO slots."""
    from ofasys.data.materialise import MaterialiseConfig, materialise_task
    from pipeline import run_config
    from pipeline.params import load_params
    from pipeline.sources import ingest

    params = load_params(params_path)
    if VIDEO_TASK not in params.tasks:
        raise ParamsError(f"{params_path} has no task {VIDEO_TASK!r}; pass the params-full.yaml that defines it")
    task = params.tasks[VIDEO_TASK]
    instruction = re.sub(r"\[VIDEO:([^\]]*)\]", r"[VIDEO:\1,jpeg_frames]", task.instruction) if jpeg else task.instruction
    source = dataclasses.replace(task.source, train=clips, valid=0, test=0, corrupt=0)
    raw = out_dir / "raw" / VIDEO_TASK
    ingest(source, seed=params.seed, out_dir=raw, key=f"tasks.{VIDEO_TASK}.source")
    model = run_config.model_config(params, UnifiedVocab.load(vocab_path).size)
    report = materialise_task(MaterialiseConfig(
        task=VIDEO_TASK, instruction=instruction, raw_splits={"train": raw / "train.parquet"},
        vocab_path=vocab_path, out_dir=out_dir / "shards" / VIDEO_TASK, image_size=task.image_size,
        shard_samples=params.materialise.shard_samples, reject_budget=0, seed=params.seed, model=model,
        progress=False))
    return report.manifest_path


def shard_bytes(manifest: Path) -> int:
    """Bytes of the shard tars a manifest lists."""
    splits = json.loads(manifest.read_text())["splits"].values()
    return sum((manifest.parent / shard["path"]).stat().st_size for split in splits for shard in split["shards"])


def raw_rows(raw: Path, data: ShardTaskData) -> list[dict]:
    """The raw train rows that were materialised, in sample order (a sample's meta records its row)."""
    table = pq.read_table(raw / data.name / "train.parquet").to_pylist()
    columns = set(data.instruction.columns())
    return [{k: table[data.get(i).meta["row"]][k] for k in columns} for i in range(len(data))]


def tensors(batch) -> list[torch.Tensor]:
    out = [s.tensor for s in batch.segments] + [s.mask for s in batch.segments if s.mask is not None]
    return out + [t for t in (batch.decoder_input, batch.target, batch.loss_mask) if t is not None]


def batch_bytes(batch, modality: str) -> tuple[int, int]:
    """(bytes of the `modality` segments, bytes of every tensor) of a batch: what a loader worker
    copies through shared memory and a GPU host copies to the device."""
    segments = sum(s.tensor.nbytes for s in batch.segments if s.kind == modality)
    return segments, sum(t.nbytes for t in tensors(batch))


def same_tensors(a, b) -> bool:
    """Whether two batches hold the same tensors (shapes and values), in the same order."""
    x, y = tensors(a), tensors(b)
    return len(x) == len(y) and all(p.shape == q.shape and torch.equal(p, q) for p, q in zip(x, y))


def batch_makers(data: ShardTaskData, rows: list[dict], vocab: UnifiedVocab):
    """(from_shards, from_raw): each makes the batch of samples start..start+BATCH-1, one from the
    shards, one by materialising the raw rows in memory, collated alike."""
    size = int(data.manifest.get("image_size") or 64)

    def from_shards(start: int):
        return data.collate([data.get(i) for i in range(start, start + BATCH)], np.random.default_rng(start), True)

    def from_raw(start: int):
        samples = [sample_from_row(data.instruction, rows[i], vocab, image_size=size, task=data.name,
                                   sides=("input", "output")) for i in range(start, start + BATCH)]
        return data.collate(samples, np.random.default_rng(start), True)

    return from_shards, from_raw


def time_batches(make, starts: list[int]) -> float:
    """Samples/s of making a batch at each start index."""
    begin = time.perf_counter()
    for start in starts:
        make(start)
    return len(starts) * BATCH / (time.perf_counter() - begin)


def measure(kind: str, label: str, manifest: Path, raw: Path, vocab: UnifiedVocab, args) -> dict[str, float]:
    """Median samples/s of each path over interleaved rounds, printed on one line."""
    data = ShardTaskData(manifest, "train", vocab)
    rows = raw_rows(raw, data)
    from_shards, from_raw = batch_makers(data, rows, vocab)
    order = np.random.default_rng(0).permutation(len(data) // BATCH)
    starts = [int(order[i % len(order)]) * BATCH for i in range(args.batches)]  # a small split repeats
    first = from_shards(starts[0])
    if not same_tensors(first, from_raw(starts[0])):
        sys.exit(f"{data.name}: the raw-decoded batch differs from the materialised one")
    pixels, total = batch_bytes(first, MODALITY_OF[kind])
    rates: dict[str, list[float]] = {"shards": [], "raw": []}
    for _ in range(args.rounds):  # interleaved, so background load hits both alike
        rates["shards"].append(time_batches(from_shards, starts))
        rates["raw"].append(time_batches(from_raw, starts))
    median = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"{kind} ({label}): shards {median['shards']:.0f} samples/s, raw decode {median['raw']:.0f} "
          f"samples/s, {median['shards'] / median['raw']:.1f}x; a batch of {BATCH}: {pixels / 2**20:.2f} MiB of {kind} "
          f"in {total / 2**20:.2f} MiB of tensors")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    parser.add_argument("--batches", type=int, default=12, help="batches of 32 per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--video-params", type=Path, default=Path("params-full.yaml"),
                        help=f"params defining {VIDEO_TASK}, used when the shards dir has no video task")
    parser.add_argument("--video-clips", type=int, default=64,
                        help=f"clips of the {VIDEO_TASK} split made when the shards dir has no video task")
    parser.add_argument("--field-rows", type=int, default=64,
                        help="rows of each image and video task re-encoded at field sizes (0: skip that measure)")
    args = parser.parse_args()
    if args.field_rows and args.field_rows < BATCH:
        parser.exit(2, f"--field-rows: must be 0 or >= {BATCH} (one batch), got {args.field_rows}\n")
    if args.batches < 1 or args.rounds < 1:
        parser.exit(2, f"--batches and --rounds: must be >= 1, got {args.batches} and {args.rounds}\n")
    if args.video_clips < BATCH:
        parser.exit(2, f"--video-clips: must be >= {BATCH} (one batch), got {args.video_clips}\n")
    vocab = UnifiedVocab.load(args.vocab)
    found = modality_tasks(args.shards)
    with tempfile.TemporaryDirectory(prefix="decode-raw-video-") as tmp:
        runs = [(kind, name, args.shards / name / "manifest.json", args.raw) for kind, name in found.items()]
        if "video" not in found:
            if not args.video_params.is_file():
                parser.exit(2, f"--video-params: {args.video_params} not found; no video task in {args.shards}, "
                               f"so the bench makes {VIDEO_TASK} from that params file (run from the project dir "
                               "or pass its path)\n")
            print(f"(no video task in {args.shards}: making {args.video_clips} clips of {VIDEO_TASK} from "
                  f"{args.video_params} in {tmp})")
            try:
                manifest = make_video_task(Path(tmp), args.vocab, args.video_params, args.video_clips)
                jpeg = make_video_task(Path(tmp) / "jpeg", args.vocab, args.video_params, args.video_clips, jpeg=True)
            except ParamsError as err:
                parser.exit(2, f"--video-params: {err}\n")
            runs.append(("video", f"{VIDEO_TASK}, made for the bench in a temp dir", manifest, Path(tmp) / "raw"))
            extra = [("video", f"{VIDEO_TASK} with jpeg_frames, for reference", jpeg, Path(tmp) / "jpeg" / "raw")]
            pixels_size, jpeg_size = shard_bytes(manifest), shard_bytes(jpeg)
            print(f"video shards of {args.video_clips} clips: {pixels_size / 2**20:.2f} MiB as pixel frames, "
                  f"{jpeg_size / 2**20:.2f} MiB with jpeg_frames ({pixels_size / jpeg_size:.1f}x)")
        else:
            extra = []
        medians = {}
        for kind, label, manifest, raw in runs:
            medians[kind] = measure(kind, label, manifest, raw, vocab, args)
        for kind, label, manifest, raw in extra:
            measure(kind, label, manifest, raw, vocab, args)
        field = dict(medians)  # audio stays as the demo has it (see field_media)
        if args.field_rows:
            print(f"(field sizes: the first {args.field_rows} rows of each image and video task re-encoded as "
                  f"{FIELD_IMAGE[0]}x{FIELD_IMAGE[1]} JPEG photos and {FIELD_VIDEO[0]}x{FIELD_VIDEO[1]} mp4 clips at "
                  f"{FIELD_FPS} fps, materialised in {tmp})")
            for kind, label, manifest, raw in runs:
                if MODALITY_OF[kind] in FIELD_ENCODERS:
                    name = json.loads(manifest.read_text())["task"]
                    made, made_raw = make_field_task(manifest, raw / name / "train.parquet", args.field_rows,
                                                     args.vocab, None, Path(tmp) / "field")
                    field[kind] = measure(kind, f"{name} at field sizes", made, made_raw, vocab, args)
    kinds = ", ".join(medians)
    print(f"loader from shards vs on-the-fly decoding of the raw rows ({kinds}), demo media: "
          f"{overall(medians):.1f}x (goal >= 20x)")
    if args.field_rows:
        print(f"loader from shards vs on-the-fly decoding of the raw rows ({kinds}), field-size media: "
              f"{overall(field):.1f}x (goal >= 20x)")


def overall(medians: dict[str, dict[str, float]]) -> float:
    """Time per sample summed over modalities, raw over shards: one sample of each modality, each way."""
    return sum(1.0 / m["raw"] for m in medians.values()) / sum(1.0 / m["shards"] for m in medians.values())


if __name__ == "__main__":
    main()
