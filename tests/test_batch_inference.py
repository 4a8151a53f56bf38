"""Batch prediction chunks join into one parquet even when they type a column differently."""

from __future__ import annotations

import pyarrow as pa

from ofasys.batch_inference import concat_chunks, prediction_rows
from ofasys.evaluation import SamplePrediction


def _chunk(objects: list) -> pa.Table:
    pred = SamplePrediction(key="test-000000000", outputs={"boxes": objects}, refs={"boxes": objects}, tokens=[])
    return pa.Table.from_pylist(prediction_rows([pred], "boxes"))


def test_a_chunk_of_empty_detections_joins_one_with_objects():
    empty, found = _chunk([]), _chunk([{"boxes": [0.0, 1.0, 2.0, 3.0], "labels": "one", "score": 0.5}])
    assert empty.schema.field("prediction").type != found.schema.field("prediction").type  # list<null> vs structs
    table = concat_chunks([empty, found])
    assert table.column("prediction").to_pylist() == [[], [{"boxes": [0.0, 1.0, 2.0, 3.0], "labels": "one",
                                                           "score": 0.5}]]
    assert concat_chunks([]).column_names == ["key"]


def test_finished_chunks_are_keyed_by_the_librarys_code(tmp_path, monkeypatch):
    """A decoding fix must not reuse predictions the old code made (they would keep its bug)."""
    import json

    import torch

    from ofasys import batch_inference

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"task": "t"}))
    task = type("T", (), {"manifest_path": manifest, "split": "test"})()
    model = torch.nn.Linear(2, 2)
    cfg = batch_inference.BatchInferenceConfig()
    first = batch_inference._fingerprint(model, task, cfg)
    assert batch_inference._fingerprint(model, task, cfg) == first
    monkeypatch.setattr(batch_inference, "code_fingerprint", lambda: "other code")
    assert batch_inference._fingerprint(model, task, cfg) != first
