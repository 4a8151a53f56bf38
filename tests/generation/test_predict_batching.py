"""`predict` batches samples of similar encoder length together, yields in index order, and its
predictions equal those made one sample at a time."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.evaluation import predict
from ofasys.model.universal import UniversalModel
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.vocab import UnifiedVocab
from tests.model.helpers import tiny_config

WORDS = "zero one two three four five six seven eight nine".split()
QA = "<BOS> what follows [TEXT:q] ? <EOS> -> <BOS> [TEXT:a,max_length=4] <EOS>"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    vocab = UnifiedVocab.build(train_text_tokenizer(["what follows ?", *WORDS * 3], vocab_size=300), num_bins=8)
    vocab.save(root / "vocab.json")
    lengths = [7, 1, 9, 2, 5, 3, 8, 1, 6, 4, 2]  # questions of 1..9 words, in no order
    rows = {"q": [" ".join(WORDS[:n]) for n in lengths], "a": [WORDS[n % 10] for n in lengths]}
    pq.write_table(pa.table(rows), root / "test.parquet")
    materialise_task(MaterialiseConfig(task="qa", instruction=QA, raw_splits={"test": root / "test.parquet"},
                                       vocab_path=root / "vocab.json", out_dir=root / "shards", shard_samples=4,
                                       progress=False))
    data = ShardTaskData(root / "shards" / "manifest.json", "test", vocab)
    torch.manual_seed(0)
    model = UniversalModel(tiny_config(vocab_size=vocab.size, dropout=0.0, init_std=0.3)).eval()
    return data, model


def test_batches_hold_samples_of_similar_length_and_outputs_match_one_at_a_time(task):
    data, model = task
    widths: list[list[int]] = []
    generate = model.generate

    def spy(batch, plans, **kw):
        widths.append(batch.segments[0].mask.sum(1).tolist() if batch.segments[0].mask is not None else [])
        return generate(batch, plans, **kw)

    model.generate = spy
    try:
        together = list(predict(model, data, beam_size=2, batch_size=3))
        batched = list(widths)
        alone = list(predict(model, data, beam_size=2, batch_size=1))
    finally:
        del model.generate
    assert [p.key for p in together] == [data.get(i).key for i in range(len(data))]  # index order
    assert [(p.key, p.tokens, p.outputs) for p in together] == [(p.key, p.tokens, p.outputs) for p in alone]
    assert any(p.tokens for p in together)
    assert [len(w) for w in batched] == [3, 3, 3, 2]
    for shorter, longer in zip(batched, batched[1:]):
        assert max(shorter) <= min(longer)  # sorted by encoder length across the batches
