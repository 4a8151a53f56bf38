"""What materialising one task takes (`MaterialiseConfig`) and what it reports (`MaterialiseReport`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ofasys.data.rejects import RejectBudget
from ofasys.data.shards import ShardInfo

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ofasys.model.config import ModelConfig


@dataclass(frozen=True)
class MaterialiseConfig:
    task: str
    """Task name, recorded in every sample and the manifest."""
    instruction: str
    """The task's instruction (one or more `|||`-separated templates)."""
    raw_splits: Mapping[str, str | os.PathLike]
    """Split name -> raw parquet path (e.g. {"train": "data/raw/caption/train.parquet"})."""
    vocab_path: str | os.PathLike
    """The unified vocabulary JSON (`UnifiedVocab.save`)."""
    out_dir: str | os.PathLike
    """Directory receiving shards, lengths files, rejects.jsonl and manifest.json."""
    image_size: int = 64
    """Square resolution IMAGE columns are resized to."""
    shard_samples: int = 1000
    """Samples per shard."""
    reject_budget: RejectBudget | float | int = field(default_factory=RejectBudget)
    """Largest share of a split's rows that may be rejected (a fraction, a count, or both)."""
    params_hash: str = ""
    """Hash of the params that produced this task (recorded in the manifest for provenance)."""
    seed: int = 0
    """Recorded in the manifest; seeds evaluation-time masking so evaluation is reproducible."""
    progress: bool = True
    """Show a tqdm bar per split (only on a terminal)."""
    image_codes_path: str | os.PathLike | None = None
    """The VQ image tokenizer file (`ofasys.vq.save_vq`) that IMAGE slots with
    `preprocess=image_vqgan` are encoded with; its fingerprint and grid go into the manifest."""
    model: "ModelConfig | None" = None
    """The model that will train on the shards: a sample whose encoder sequence or decoder input
    would be longer than its `max_positions` under any template (embedded slots counted as its
    adaptors embed them) is rejected, with the fix in the reason (see `ofasys.data.limits`), and the
    lengths files hold the positions its adaptors make. None skips the check (the model then refuses
    such a sample when a batch draws it) and counts embedded slots with default adaptor settings."""
    num_workers: int = 1
    """Processes decoding rows: 1 decodes in this process; N > 1 starts N worker processes that
    materialise ordered chunks of rows while this process writes them in row order, so the files are
    byte-identical to a 1-worker run. Decoding (images, audio features) is the cost, so N up to the
    free cores speeds materialisation up nearly N-fold. Workers start by importing the main module
    ('spawn'), so a script using N > 1 needs the usual `if __name__ == "__main__":` guard."""

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(f"num_workers must be an integer >= 1, got {self.num_workers!r}")


@dataclass(frozen=True)
class SplitReport:
    split: str
    num_rows: int
    num_samples: int
    num_rejects: int
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class MaterialiseReport:
    task: str
    manifest_path: Path
    rejects_path: Path
    splits: Mapping[str, SplitReport]

    def __str__(self) -> str:
        parts = [
            f"{s.split} {s.num_samples}/{s.num_rows} rows kept ({s.num_rejects} rejected) in {len(s.shards)} shard(s)"
            for s in self.splits.values()
        ]
        return f"{'; '.join(parts)} -> {self.manifest_path}"


__all__ = ["MaterialiseConfig", "MaterialiseReport", "SplitReport"]
