"""ShardTaskData: one materialised task split as the trainer and evaluator see it.

Random access by sample index: sample i is the i-th accepted row of the split, shards hold
consecutive index ranges, and a sample is read with `pread`s at the tar member offsets recorded when
the shard is first opened. Shards open lazily and are cached per process (a forked loader worker
re-opens its own). What the reader relies on is verified: the vocabulary fingerprint at construction,
and, with `verify=True`, the lengths file's sha256 at construction and each shard's.

Hashing every shard is the expensive part, and it need happen once per run, not once per process:
`verify_files()` hashes the split's shards (and lengths file) up front and marks them verified, and
`assume_verified()` tells a copy in another process that someone did (the trainer has one process
per machine verify before training, then every rank and loader worker skips the hash). Opening a
shard always re-checks its structure: the tar index must hold the recorded number of samples.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ofasys.data.batch import Batch
from ofasys.data.collate import Collator, Sample, generation_assets
from ofasys.data.io import npy_load
from ofasys.data.manifest import ManifestError, ShardIntegrityError, load_lengths, read_manifest, verify_file
from ofasys.data.plan import DEFAULT_MAX_TEXT_TOKENS, OutputPlan
from ofasys.data.shards import MemberRef, index_shard
from ofasys.instruction.ast import Instruction
from ofasys.vocab import UnifiedVocab

__all__ = ["Sample", "ShardTaskData"]


class ShardTaskData:
    """Random-access view of `split` of the task whose manifest is `manifest_path`."""

    def __init__(self, manifest_path: str | os.PathLike, split: str, vocab: UnifiedVocab, verify: bool = True):
        from ofasys.instruction import parse_instruction

        self.manifest_path = Path(manifest_path)
        self.root = self.manifest_path.parent
        self.manifest = read_manifest(self.manifest_path)
        self.split = split
        self.vocab = vocab
        self.verify = verify
        vocab.check_fingerprint(self.manifest["assets"]["vocab"], where=str(self.manifest_path))
        if split not in self.manifest["splits"]:
            raise ManifestError(f"{self.manifest_path}: no split {split!r} (has {sorted(self.manifest['splits'])})")
        self.name: str = self.manifest["task"]
        entry = self.manifest["splits"][split]
        self._shards: list[dict] = list(entry["shards"])
        self._starts = np.cumsum([0] + [s["num_samples"] for s in self._shards]).tolist()
        self._len = int(entry["num_samples"])
        if self._starts[-1] != self._len:
            raise ManifestError(
                f"{self.manifest_path}: split {split!r} lists {self._starts[-1]} samples in shards but num_samples={self._len}"
            )
        lengths_path = self.root / entry["lengths_file"]
        if verify:
            verify_file(lengths_path, entry["lengths_sha256"])
        self.lengths: np.ndarray = load_lengths(lengths_path, self._len)
        """(N, 2) int32: the encoder and decoder positions each sample occupies in the model."""
        self.instruction: Instruction = parse_instruction(self.manifest["instruction"])
        # an open text output's default generation cap: the longest decoder input any split holds
        max_len = max((int(e["lengths"]["decoder"]["max"]) for e in self.manifest["splits"].values()), default=0)
        self.collator = Collator(
            self.instruction,
            vocab,
            self.name,
            closed_sets=self.manifest.get("closed_sets", {}),
            seed=int(self.manifest.get("seed", 0)),
            default_max_text=max(max_len, 1) if max_len else DEFAULT_MAX_TEXT_TOKENS,
            assets=generation_assets(self.manifest),
        )
        self._verified = False
        self._index: dict[int, tuple[list[str], dict[str, dict[str, MemberRef]]]] = {}
        self._reset_handles()

    # ----- verification ---------------------------------------------------------------------------
    def verify_files(self) -> None:
        """Hash every shard and the lengths file of this split against the manifest now (raises
        `ShardIntegrityError`), so opening a shard later skips the hash."""
        entry = self.manifest["splits"][self.split]
        for shard in self._shards:
            verify_file(self.root / shard["path"], shard["sha256"], shard["bytes"])
        verify_file(self.root / entry["lengths_file"], entry["lengths_sha256"])
        self._verified = True

    def assume_verified(self) -> None:
        """Another process verified this split's files (`verify_files`) for this run: skip the hash."""
        self._verified = True

    # ----- process-local shard handles ------------------------------------------------------------
    def _reset_handles(self) -> None:
        """Descriptors are per process; the shard indexes (member offsets of a file that does not
        change during a run) survive a fork or a pickle, so loader workers need not re-read every
        tar's headers (`index_shards`)."""
        self._pid = os.getpid()
        self._fds: dict[int, int] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._reset_handles()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def index_shards(self) -> None:
        """Index every shard of the split now: processes forked later (loader workers) inherit the
        indexes instead of each re-reading every tar's headers."""
        for k in range(len(self._shards)):
            self._indexed(k)

    def _indexed(self, k: int) -> tuple[list[str], dict[str, dict[str, MemberRef]]]:
        """Shard k's index, built on first use; the file is verified first (unless it was up front) and
        must hold the recorded number of samples."""
        if k not in self._index:
            shard = self._shards[k]
            path = self.root / shard["path"]
            if self.verify and not self._verified:
                verify_file(path, shard["sha256"], shard["bytes"])
            index = index_shard(path)
            keys = list(index)
            if len(keys) != shard["num_samples"]:
                raise ShardIntegrityError(f"{path}: {len(keys)} samples, the manifest recorded {shard['num_samples']}")
            self._index[k] = (keys, index)
        return self._index[k]

    def _open(self, k: int) -> tuple[int, list[str], dict[str, dict[str, MemberRef]]]:
        if self._pid != os.getpid():  # forked: the parent's descriptors are the parent's to close; use our own
            self._reset_handles()
        keys, index = self._indexed(k)
        if k not in self._fds:
            self._fds[k] = os.open(self.root / self._shards[k]["path"], os.O_RDONLY)
        return self._fds[k], keys, index

    # ----- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    def get(self, i: int) -> Sample:
        if not -self._len <= i < self._len:
            raise IndexError(f"sample {i} out of range for {self.name}/{self.split} ({self._len} samples)")
        i = int(i) % self._len
        k = bisect.bisect_right(self._starts, i) - 1
        fd, keys, index = self._open(k)
        key = keys[i - self._starts[k]]
        meta: dict | None = None
        arrays: dict[str, np.ndarray] = {}
        refs = index[key]
        # A sample's members are adjacent in the tar: one read for all of them, into a writable buffer
        # the arrays then use in place.
        start = min(ref.offset for ref in refs.values())
        buf = bytearray(max(ref.offset + ref.size for ref in refs.values()) - start)
        if os.preadv(fd, [buf], start) != len(buf):
            raise ShardIntegrityError(f"{self._shards[k]['path']}: sample {key} is cut short")
        view = memoryview(buf)
        for ext, ref in refs.items():
            data = view[ref.offset - start: ref.offset - start + ref.size]
            if ext == "json":
                meta = json.loads(bytes(data).decode("utf-8"))
            elif ext.endswith(".npy"):
                arrays[ext[: -len(".npy")]] = npy_load(data)
        if meta is None:
            raise ShardIntegrityError(f"{self._shards[k]['path']}: sample {key} has no json member")
        return Sample(key, meta, arrays)

    def __getitem__(self, i: int) -> Sample:
        return self.get(i)

    # ----- batches --------------------------------------------------------------------------------
    def collate(self, samples: Sequence[Sample], rng: np.random.Generator, train: bool,
                epoch: int | None = None) -> Batch:
        return self.collator.collate(samples, rng, train, epoch=epoch)

    def collate_for_generation(self, samples: Sequence[Sample], template: int = 0) -> Batch:
        return self.collator.collate_for_generation(samples, template)

    def plan(self, sample: Sample | None = None, template: int = 0) -> OutputPlan:
        return self.collator.plan(sample, template)

