"""The data layer: materialise tasks into WebDataset shards, read them back, collate model batches.

    materialise_task(MaterialiseConfig(...))    raw parquet -> shards + manifest + rejects
    ShardTaskData(manifest, split, vocab)       random access, collate(), collate_for_generation(), plan()
    OutputPlan                                  constrained generation steps and decoding

Names are resolved lazily (PEP 562) so that `ofasys.vocab` can use `ofasys.data.io` without importing
the whole layer (and torch) first.
"""

from __future__ import annotations

from ofasys.lazy_exports import lazy_getattr

_EXPORTS = {
    "Batch": "ofasys.data.batch",
    "EncoderSegment": "ofasys.data.batch",
    "Collator": "ofasys.data.collate",
    "Sample": "ofasys.data.collate",
    "MaterialiseConfig": "ofasys.data.materialise",
    "MaterialiseReport": "ofasys.data.materialise",
    "UnsupportedSlotError": "ofasys.data.materialise",
    "materialise_task": "ofasys.data.materialise",
    "sample_from_row": "ofasys.data.materialise",
    "ManifestError": "ofasys.data.manifest",
    "ShardIntegrityError": "ofasys.data.manifest",
    "read_manifest": "ofasys.data.manifest",
    "verify_manifest": "ofasys.data.manifest",
    "OutputPlan": "ofasys.data.plan",
    "OutputWriteError": "ofasys.data.io",
    "PositionLimit": "ofasys.data.limits",
    "PlanError": "ofasys.data.plan",
    "RejectBudget": "ofasys.data.rejects",
    "RejectBudgetExceeded": "ofasys.data.rejects",
    "ShardTaskData": "ofasys.data.task_data",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
