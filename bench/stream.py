"""What materialisation buys: batches from shards vs the same batches decoded from raw rows each epoch.

Both paths produce identical model batches for the caption task of the demo (run `dvc repro` first):
(a) read materialised samples from the WebDataset shards and collate; (b) decode the PNG, resize,
BPE-encode from the raw parquet row (what a loader without materialisation repeats every epoch),
then collate. Also prints the padding fraction of length-bucketed vs unbucketed batches (the stored
[encoder, decoder] positions, both sides and each).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ofasys.data.materialise import sample_from_row
from ofasys.data.task_data import ShardTaskData
from ofasys.training.sampler import cut_batches, padding_fraction
from ofasys.vocab import UnifiedVocab

TASK = sys.argv[1] if len(sys.argv) > 1 else "caption"
BATCH, N = 64, 1024


def main() -> None:
    vocab = UnifiedVocab.load("assets/vocab.json")
    data = ShardTaskData(Path("data/shards") / TASK / "manifest.json", "train", vocab)
    raw = pq.read_table(Path("data/raw") / TASK / "train.parquet").slice(0, N + 16).to_pylist()
    size = int(data.manifest["image_size"])
    rng = np.random.default_rng(0)
    data.collate([data.get(0)], rng, train=True)  # open shards, warm caches

    start = time.perf_counter()
    for i in range(0, N, BATCH):
        data.collate([data.get(j) for j in range(i, i + BATCH)], rng, train=True)
    shards = N / (time.perf_counter() - start)

    columns = set(data.instruction.columns())
    start, done = time.perf_counter(), 0
    rows = iter(r for r in raw if r.get("img") is not None)
    while done < N:
        samples = []
        while len(samples) < BATCH:
            row = next(rows)
            try:
                samples.append(sample_from_row(data.instruction, {k: row[k] for k in columns}, vocab,
                                               image_size=size, sides=("input", "output")))
            except ValueError:  # the demo's deliberately corrupt rows
                continue
        data.collate(samples, rng, train=True)
        done += BATCH
    decoded = N / (time.perf_counter() - start)
    print(f"{TASK}: shards {shards:.0f} samples/s, raw decode {decoded:.0f} samples/s, ratio {shards / decoded:.1f}x")

    lengths = data.lengths
    order = rng.permutation(len(lengths))
    pool = order[:4096]
    bucketed = cut_batches(pool, lengths[pool], max_tokens=4096, max_batch_size=BATCH)
    flat = cut_batches(pool, lengths[pool], max_tokens=4096, max_batch_size=BATCH, sort=False)
    def sides(batches) -> str:  # both sides, then encoder / decoder
        return (f"{padding_fraction(batches, lengths):.3f} (encoder {padding_fraction(batches, lengths, 0):.3f}, "
                f"decoder {padding_fraction(batches, lengths, 1):.3f})")

    print(f"{TASK}: padding fraction bucketed {sides(bucketed)}, unbucketed {sides(flat)}")


if __name__ == "__main__":
    main()
