"""Samples the model can't take are rejected at materialisation, counted exactly as collation builds them."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ofasys.data.collate import Collator, Sample
from ofasys.data.limits import PositionCounter
from ofasys.data.materialise import MaterialiseConfig, materialise_task, sample_from_row
from ofasys.data.rejects import read_rejects
from ofasys.data.task_data import ShardTaskData
from ofasys.instruction import parse_instruction
from ofasys.model import ModelConfig
from ofasys.modalities import MODALITIES
from ofasys.model.universal import UniversalModel

SUMMARY = "<BOS> what is the complete text of [TEXT:doc] <EOS> -> <BOS> [TEXT:title] <EOS>"
QA = "[IMAGE:img] <BOS> [TEXT:q] <EOS> -> <BOS> [TEXT:a] <EOS>"


def words(vocab, n: int) -> str:
    """A text of exactly n token ids ("one" is one id in the test vocabulary, with or without a space)."""
    text = " ".join(["one"] * n)
    assert len(vocab.encode_text(text)) == n
    return text


@pytest.mark.parametrize("stem,sizes", [("conv", [1, 7, 8, 17, 33, 64]), ("resnet50", [16, 33, 64]),
                                        ("patch", [16, 33, 64])])
def test_image_positions_are_what_the_adaptor_produces(stem, sizes):
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, heads=4, adaptors={"IMAGE": {"stem": stem, "stem_channels": 16,
                                                                  "positions": "sinusoidal"}})
    adaptor = MODALITIES["IMAGE"].build_adaptor(config).eval()
    for size in sizes:
        with torch.no_grad():
            tokens, mask = adaptor(torch.rand(1, 3, size, size))
        counted = MODALITIES["IMAGE"].encoder_positions(np.zeros((size, size, 3), np.uint8), {}, config)
        assert tokens.shape[1] == counted == int(mask.sum()), (stem, size)
    image = np.zeros((64, 64, 3), np.uint8)
    assert MODALITIES["IMAGE"].encoder_positions(image, {}, ModelConfig()) == 64
    assert MODALITIES["IMAGE"].encoder_positions(image, {}, ModelConfig.preset("base")) == 16


@pytest.mark.parametrize(
    "instruction",
    [
        QA,
        '[IMAGE:img] <BOS> which region does the text " [TEXT:q] " describe? <EOS> -> [BOX:region,add_bos,add_eos]',
        "[TEXT:q] -> answer: [TEXT:q,no_loss] is [TEXT:a]",
        "[TEXT:q] [IMAGE:img] [TEXT:a] -> [TEXT:a]|||[IMAGE:img] [IMAGE:img] -> <BOS> hello [TEXT:q] <EOS>",
    ],
)
def test_counts_match_the_collated_batch_and_the_model(instruction, vocab):
    """The counter agrees with what the real collator builds and the real model embeds."""
    ins = parse_instruction(instruction)
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1,
                         adaptors={"IMAGE": {"stem_channels": 16, "max_grid": 8}})
    model = UniversalModel(config).eval()
    counter = PositionCounter(ins, vocab, config)
    collator = Collator(ins, vocab, "t")
    arrays = {
        "img.image": np.zeros((16, 16, 3), np.uint8),
        "q.text": np.asarray(vocab.encode_text("two three four"), np.int32),
        "a.text": np.asarray(vocab.encode_text("five"), np.int32),
        "region.box": np.asarray([vocab.bin_id(i) for i in (1, 2, 9, 12)], np.int32),
    }
    s = Sample("train-000000000", {"meta": {"img": {"width": 16, "height": 16}}}, arrays)
    for t, counted in enumerate(counter.counts(arrays)):
        batch = collator.collate([s], np.random.default_rng(0), train=False, template=t)
        with torch.no_grad():
            memory, mask = model.encode(batch)
        assert counted.encoder == int(mask.sum()) == memory.shape[1]
        assert counted.decoder == batch.decoder_input.shape[1]


def _summary_task(tmp_path, parquet, vocab_path, docs, **cfg):
    titles = ["one two"] * len(docs)
    base = dict(
        task="summary", instruction=SUMMARY, vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"),
        raw_splits={"train": parquet(tmp_path / "raw/train.parquet", {"doc": docs, "title": titles})},
        reject_budget=0.5, progress=False, model=ModelConfig(max_positions=1024),
    )
    base.update(cfg)
    return MaterialiseConfig(**base)


def test_a_1mb_text_cell_is_rejected_with_the_fix_and_its_neighbours_kept(tmp_path, parquet, vocab_path, vocab):
    huge = "one two three " * 80000  # 1.1 MB, 240,000 ids
    docs = ["two three", "four five", huge, "six seven"]
    materialise_task(_summary_task(tmp_path, parquet, vocab_path, docs))
    m = json.loads((tmp_path / "out/manifest.json").read_text())
    assert m["splits"]["train"]["num_samples"] == 3 and m["splits"]["train"]["num_rejects"] == 1
    assert m["limits"] == {"max_positions": 1024, "adaptors": {}}
    ids = len(vocab.encode_text(huge.strip()))
    prompt = len(vocab.encode_text("what is the complete text of"))
    encoder = 1 + prompt + ids + 1  # <BOS> prompt doc <EOS>
    fit = ids - (encoder - 1024)
    [rej] = read_rejects(tmp_path / "out/rejects.jsonl")
    assert (rej.row, rej.column) == (2, "doc")
    assert rej.reason == (
        f"encoder side is {encoder} tokens, model.max_positions is 1024; "
        f"add max_length={fit} to the [TEXT:doc] slot or raise model.max_positions"
    )
    td = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    assert [td.get(i).key for i in range(len(td))] == ["train-000000000", "train-000000001", "train-000000003"]

    # the suggested max_length makes the row fit: truncated and kept
    fixed = SUMMARY.replace("[TEXT:doc]", f"[TEXT:doc,max_length={fit}]")
    materialise_task(_summary_task(tmp_path, parquet, vocab_path, docs, instruction=fixed, out_dir=str(tmp_path / "out2")))
    td = ShardTaskData(tmp_path / "out2/manifest.json", "train", vocab)
    assert len(td) == 4 and read_rejects(tmp_path / "out2/rejects.jsonl") == []
    assert td.get(2).arrays["doc.text"].tolist() == vocab.encode_text(huge.strip())[:fit]


def test_without_max_positions_nothing_is_checked(tmp_path, parquet, vocab_path):
    docs = ["two three", "one " * 2000]
    materialise_task(_summary_task(tmp_path, parquet, vocab_path, docs, model=None))
    m = json.loads((tmp_path / "out/manifest.json").read_text())
    assert m["splits"]["train"]["num_samples"] == 2 and m["limits"] == {"max_positions": None, "adaptors": {}}


def test_an_image_task_needs_a_model_with_an_image_adaptor(tmp_path, parquet, png, vocab_path):
    splits = {"train": parquet(tmp_path / "raw/train.parquet", {"img": [png(8, 8)], "q": ["one"], "a": ["two"]})}
    cfg = MaterialiseConfig(task="qa", instruction=QA, raw_splits=splits, vocab_path=str(vocab_path),
                            out_dir=str(tmp_path / "out"), progress=False,
                            model=ModelConfig(max_positions=64, adaptors={}))
    with pytest.raises(ValueError, match="no adaptor for IMAGE"):
        materialise_task(cfg)
    assert not (tmp_path / "out").exists()


def test_samples_exactly_at_the_limit_are_kept_and_the_model_takes_them(tmp_path, parquet, png, vocab_path, vocab):
    """Encoder: 4 image tokens + <BOS> q <EOS>; decoder input: <bos> a (the final <eos> is only a target)."""
    P = 24
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1,
                         adaptors={"IMAGE": {"stem_channels": 16, "max_grid": 8}}, max_positions=P)
    image_tokens = MODALITIES["IMAGE"].encoder_positions(np.zeros((16, 16, 3), np.uint8), {}, config)
    assert image_tokens == 4
    q_fit, a_fit = P - image_tokens - 2, P - 1
    rows = {  # q ids, a ids
        "enc_at_limit": (q_fit, 1),
        "enc_over": (q_fit + 1, 1),
        "dec_at_limit": (1, a_fit),
        "dec_over": (1, a_fit + 1),
    }
    cols = {"img": [png(20, 20, seed=i) for i in range(4)],
            "q": [words(vocab, q) for q, _ in rows.values()], "a": [words(vocab, a) for _, a in rows.values()]}
    splits = {"train": parquet(tmp_path / "raw/train.parquet", cols)}
    cfg = MaterialiseConfig(task="qa", instruction=QA, raw_splits=splits, vocab_path=str(vocab_path),
                            out_dir=str(tmp_path / "out"), image_size=16, reject_budget=0.5, progress=False,
                            model=config)
    materialise_task(cfg)
    rejects = read_rejects(tmp_path / "out/rejects.jsonl")
    assert [(r.row, r.column, r.reason) for r in rejects] == [
        (1, "q", f"encoder side is {P + 1} tokens, model.max_positions is {P}; "
                 f"add max_length={q_fit} to the [TEXT:q] slot or raise model.max_positions"),
        (3, "a", f"decoder side is {P + 1} tokens, model.max_positions is {P}; "
                 f"add max_length={a_fit} to the [TEXT:a] slot or raise model.max_positions"),
    ]
    td = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    kept = [td.get(i) for i in range(len(td))]
    assert [s.key for s in kept] == ["train-000000000", "train-000000002"]

    torch.manual_seed(0)
    model = UniversalModel(config)
    batch = td.collate(kept, np.random.default_rng(0), train=True)
    assert batch.decoder_input.shape[1] == P
    loss, stats = model.loss(batch)
    assert torch.isfinite(loss) and stats["ntokens"] > 0
    # and one token more is what the model refuses, on either side
    collator = Collator(parse_instruction(QA), vocab, "qa")
    for q, a, side in [(q_fit + 1, 1, "encoder"), (1, a_fit + 1, "decoder")]:
        over = sample_from_row(QA, {"img": png(20, 20), "q": words(vocab, q), "a": words(vocab, a)}, vocab,
                               image_size=16, sides=("input", "output"))
        with pytest.raises(ValueError, match=f"{side} sequence of {P + 1} tokens exceeds max_positions={P}"):
            model.loss(collator.collate([over], np.random.default_rng(0), train=True))


def test_the_fix_names_an_existing_max_length_and_image_only_overflow(tmp_path, parquet, png, vocab_path, vocab):
    ins = "[IMAGE:img] <BOS> [TEXT:q,max_length=30] <EOS> -> <BOS> [TEXT:a] <EOS>"
    splits = {"train": parquet(tmp_path / "raw/train.parquet",
                               {"img": [png(20, 20)] * 2, "q": [words(vocab, 30), "one"], "a": ["two"] * 2})}
    cfg = MaterialiseConfig(task="qa", instruction=ins, raw_splits=splits, vocab_path=str(vocab_path),
                            out_dir=str(tmp_path / "out"), image_size=16, reject_budget=0.5, progress=False,
                            model=ModelConfig(max_positions=20, adaptors={"IMAGE": {"stem": "patch", "patch_size": 4}}))
    materialise_task(cfg)
    [rej] = read_rejects(tmp_path / "out/rejects.jsonl")
    # 16 image tokens + <BOS> + 30 + <EOS> = 48: q must drop to 30 - 28 = 2
    assert rej.reason == ("encoder side is 48 tokens, model.max_positions is 20; "
                          "lower max_length= of the [TEXT:q] slot to 2 or raise model.max_positions")
    # images alone beyond the limit: no max_length can help
    cfg = MaterialiseConfig(**{**cfg.__dict__, "model": replace(cfg.model, max_positions=17),
                               "out_dir": str(tmp_path / "out2"), "reject_budget": 1.0})
    materialise_task(cfg)
    reasons = {r.reason for r in read_rejects(tmp_path / "out2/rejects.jsonl")}
    assert reasons == {"encoder side is 19 tokens, model.max_positions is 17; raise model.max_positions or lower the task's image_size",
                       "encoder side is 48 tokens, model.max_positions is 17; raise model.max_positions or lower the task's image_size"}
