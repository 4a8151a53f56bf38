"""Random access into the shards: the hand-written pread reader (ShardTaskData) vs webdataset's wids.

Why: the sampler visits samples in a shuffled order, so the loader reads by index. `ShardTaskData`
indexes each tar once and `pread`s a sample's members at their recorded offsets; wids
(`ShardListDataset`, the indexed WebDataset reader, shipped apart from webdataset 1.x as the `wids`
package) memory-maps each tar and slices members out. Both decode the same bytes the same way here
(the json member with `json.loads`, every `.npy` member with `npy_load`), the decoded samples are
checked equal, and the samples/s of the two are measured interleaved over the same shuffled indices.

    python bench/shard_read.py [--shards DIR] [--vocab FILE] [--tasks caption,asr] [--samples N]

wids is not a project dependency: `pip install wids` into the environment that runs this (it writes
lock files beside the shards it opens, so it is pointed at symlinks in a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ofasys.data.io import npy_load
from ofasys.data.task_data import Sample, ShardTaskData
from ofasys.vocab import UnifiedVocab


def import_wids():
    try:
        import wids
    except ImportError:
        try:
            from webdataset import wids  # webdataset releases that still bundle it
        except ImportError:
            sys.exit("this bench needs wids: pip install wids")
    return wids


def wids_dataset(wids, data: ShardTaskData, links: Path):
    """A ShardListDataset over `data`'s shards, opened through symlinks under `links`."""
    shards = []
    for shard in data._shards:
        link = links / data.name / shard["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((data.root / shard["path"]).resolve())
        shards.append({"url": str(link), "nsamples": shard["num_samples"]})
    return wids.ShardListDataset(shards, transformations=[], localname=lambda url: url, lru_size=64)


def wids_sample(raw: dict) -> Sample:
    """The same decoding `ShardTaskData.get` does, applied to wids' members (".ext" -> BytesIO)."""
    meta = json.loads(raw[".json"].getvalue().decode("utf-8"))
    arrays = {ext[1: -len(".npy")]: npy_load(v.getvalue()) for ext, v in raw.items() if ext.endswith(".npy")}
    return Sample(raw["__key__"], meta, arrays)


def same(a: Sample, b: Sample) -> bool:
    return (a.key == b.key and a.meta == b.meta and a.arrays.keys() == b.arrays.keys()
            and all(a.arrays[k].dtype == b.arrays[k].dtype and np.array_equal(a.arrays[k], b.arrays[k])
                    for k in a.arrays))


def rate(read, order: np.ndarray) -> float:
    start = time.perf_counter()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--vocab", type=Path, default=Path("assets/vocab.json"))
    parser.add_argument("--tasks", default="caption,asr")
    parser.add_argument("--samples", type=int, default=3000, help="random reads per task per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    wids = import_wids()
    vocab = UnifiedVocab.load(args.vocab)
    rng = np.random.default_rng(0)
    totals = {"pread": 0.0, "wids": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            ours = ShardTaskData(args.shards / name / "manifest.json", "train", vocab)
            theirs = wids_dataset(wids, ours, Path(tmp))
            order = rng.permutation(len(ours))[: args.samples]
            for i in order[:200]:  # identical decoded samples (and both warmed: shards opened, pages cached)
                if not same(ours.get(int(i)), wids_sample(theirs[int(i)])):
                    sys.exit(f"{name}: sample {i} differs between the readers")
            rates = {"pread": [], "wids": []}
            for _ in range(args.rounds):  # interleaved, so background load hits both alike
                rates["pread"].append(rate(ours.get, order))
                rates["wids"].append(rate(lambda i: wids_sample(theirs[i]), order))
            median = {k: float(np.median(v)) for k, v in rates.items()}
            print(f"{name}: pread {median['pread']:.0f} samples/s, wids {median['wids']:.0f} samples/s "
                  f"({len(order)} shuffled reads x {args.rounds} rounds)")
            for k in totals:  # time per sample, summed over tasks
                totals[k] += 1.0 / median[k]
            theirs.close()
            ours.close()
    print(f"hand-written pread reader vs wids random access: {totals['wids'] / totals['pread']:.2f}x")


if __name__ == "__main__":
    main()
