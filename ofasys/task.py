"""`Task`: one instruction-declared task, usable from Python without the DVC pipeline.

A task is what `params.yaml` declares under `tasks:` (name, instruction, mix weight), plus the image
size its IMAGE columns are resized to. The instruction is parsed when the `Task` is made, so a typo
fails at the line that declares it, with the position and a fix, not after shards were written.
`materialise` and `load` are thin calls into the same library code the pipeline stages run
(`ofasys.data.materialise`, `ofasys.data.task_data`), so a task built here and one built by
`dvc repro` go through the same checks and write the same shard format.
Those modules are imported on first use: declaring and validating tasks stays instant.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ofasys.instruction import Instruction, parse_instruction

if TYPE_CHECKING:
    from ofasys.data.materialise import MaterialiseReport
    from ofasys.model.config import ModelConfig
    from ofasys.data.rejects import RejectBudget
    from ofasys.data.task_data import ShardTaskData
    from ofasys.vocab import UnifiedVocab

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Task:
    name: str
    """Names the task in samples, manifests, metrics and the trainer's mix; a Python identifier."""
    instruction: str
    """One or more `|||`-separated templates (see the instruction language in the README)."""
    weight: float = 1.0
    """Mix weight relative to the other tasks; pass `{t.name: t.weight}` to `Trainer`."""
    image_size: int = 64
    """Square resolution IMAGE columns are resized to at materialisation."""
    parsed: Instruction = field(init=False, repr=False, compare=False, hash=False)
    """The parsed instruction (parsing at construction is the point: errors surface here)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Task name must be a Python identifier (letters, digits, _), got {self.name!r}")
        if not isinstance(self.instruction, str):
            raise ValueError(f"Task {self.name!r}: instruction must be a string, got {type(self.instruction).__name__}")
        object.__setattr__(self, "parsed", parse_instruction(self.instruction))
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) \
                or not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"Task {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"Task {self.name!r}: image_size must be an integer >= 1, got {self.image_size!r}")

    def materialise(self, raw_splits: Mapping[str, PathLike], vocab_path: PathLike, out_dir: PathLike, *,
                    shard_samples: int = 1000, reject_budget: RejectBudget | float | int = 0.01, seed: int = 0,
                    model: "ModelConfig | None" = None, progress: bool = True,
                    image_codes_path: PathLike | None = None) -> MaterialiseReport:
        """Write `out_dir/<split>-*.tar`, lengths files, rejects.jsonl and manifest.json from the raw
        parquet of each split (split name -> path). With `model` (the `ModelConfig` that will train on
        the shards), a sample the model could not take (longer than its `max_positions`, embedded
        slots counted as its adaptors embed them) is rejected now instead of failing a batch
        mid-training. `image_codes_path` is the VQ tokenizer file (`ofasys.vq.save_vq`) that slots with
        `preprocess=image_vqgan` are coded with."""
        from ofasys.data.materialise import MaterialiseConfig, materialise_task

        return materialise_task(MaterialiseConfig(
            task=self.name, instruction=self.instruction, raw_splits=dict(raw_splits), vocab_path=vocab_path,
            out_dir=out_dir, image_size=self.image_size, shard_samples=shard_samples,
            reject_budget=reject_budget, seed=seed, progress=progress, model=model,
            image_codes_path=image_codes_path))

    def load(self, out_dir: PathLike, split: str, vocab: UnifiedVocab | PathLike) -> ShardTaskData:
        """The materialised `split` as `Trainer` and the evaluator read it. Refuses shards that another
        task or another instruction produced, since training on them would silently learn the wrong task."""
        from ofasys.data.manifest import MANIFEST_NAME
        from ofasys.data.task_data import ShardTaskData
        from ofasys.vocab import UnifiedVocab

        if not isinstance(vocab, UnifiedVocab):
            vocab = UnifiedVocab.load(vocab)
        data = ShardTaskData(Path(out_dir) / MANIFEST_NAME, split, vocab)
        if data.name != self.name or data.manifest["instruction"] != self.instruction:
            data.close()
            raise ValueError(f"{Path(out_dir) / MANIFEST_NAME} holds task {data.name!r} materialised from another "
                             f"declaration than Task {self.name!r}; "
                             "fix: re-run this task's materialise(...) into that directory")
        return data
