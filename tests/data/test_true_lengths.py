"""The lengths files hold what collation really builds: per sample, the encoder positions the model
embeds and the decoder input's length, so a batch's padded size is batch size x the stored maxima."""

import numpy as np
import pytest
import torch

from ofasys.data.materialise import MaterialiseConfig, materialise_task
from ofasys.data.task_data import ShardTaskData
from ofasys.model import ModelConfig
from ofasys.model.universal import UniversalModel
from ofasys.training.sampler import cut_batches

DEMO_LIKE = {  # the demo's instructions (params.yaml), on the test vocabulary's words
    "caption": "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>",
    "grounding": '[IMAGE:img] <BOS> which region does the text " [TEXT:query] " describe? <EOS> -> '
                 "[BOX:region,add_bos,add_eos]",
    "vqa": "[IMAGE:img] <BOS> [TEXT:question] <EOS> -> <BOS> [TEXT:answer,closed_set] <EOS>",
    "infill": '<BOS> what is the complete text of " [TEXT:text] "? <EOS> -> <BOS> [TEXT:text] <EOS>',
}
WORDS = "zero one two three four five six seven eight nine".split()


def _columns(name: str, n: int, png) -> dict:
    rng = np.random.default_rng(len(name))
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))) for _ in range(n)]
    sizes = [(int(rng.integers(10, 40)), int(rng.integers(10, 40))) for _ in range(n)]
    images = [png(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    if name == "caption":
        return {"img": images, "cap": texts}
    if name == "grounding":
        return {"img": images, "query": texts, "region": [[1.0, 2.0, w - 1.0, h - 2.0] for w, h in sizes]}
    if name == "vqa":
        return {"img": images, "question": texts, "answer": [WORDS[i % 3] for i in range(n)]}
    return {"text": texts}


@pytest.mark.parametrize("name", sorted(DEMO_LIKE))
def test_collated_batches_are_padded_to_the_stored_lengths(name, tmp_path, png, parquet, vocab_path, vocab):
    n = 24
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1,
                         adaptors={"IMAGE": {"stem_channels": 16, "max_grid": 8}} if name != "infill" else {})
    materialise_task(MaterialiseConfig(
        task=name, instruction=DEMO_LIKE[name], vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"),
        raw_splits={"train": parquet(tmp_path / "raw/train.parquet", _columns(name, n, png))}, image_size=16,
        progress=False, model=config))
    data = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    assert len(data) == n and data.lengths.shape == (n, 2)
    model = UniversalModel(config).eval()
    batches = cut_batches(list(range(n)), data.lengths, max_tokens=10 * int(data.lengths.max()), max_batch_size=8)
    assert len(batches) > 1
    for indices in batches:
        batch = data.collate([data.get(i) for i in indices], np.random.default_rng(0), train=False)
        with torch.no_grad():
            memory, mask = model.encode(batch)
        stored = data.lengths[indices]
        # per sample: real encoder positions and decoder inputs are the stored ones...
        assert mask.sum(1).tolist() == stored[:, 0].tolist()
        assert (batch.decoder_input != 0).sum(1).tolist() == stored[:, 1].tolist()
        # ...so the padded batch is batch size x the stored maxima, on each side
        assert memory.shape[:2] == (len(indices), int(stored[:, 0].max()))
        assert batch.decoder_input.shape == (len(indices), int(stored[:, 1].max()))


def test_span_masking_only_shortens_what_is_stored(tmp_path, png, parquet, vocab_path, vocab):
    """The demo's infill masks spans of its input (`mask_ratio`): the stored encoder length is the
    unmasked one, the bound the budget needs, and the decoder is untouched."""
    instruction = DEMO_LIKE["infill"].replace("[TEXT:text]", "[TEXT:text,mask_ratio=0.3]", 1)
    materialise_task(MaterialiseConfig(
        task="infill", instruction=instruction, vocab_path=str(vocab_path), out_dir=str(tmp_path / "out"),
        raw_splits={"train": parquet(tmp_path / "raw/train.parquet", _columns("infill", 16, png))}, progress=False))
    data = ShardTaskData(tmp_path / "out/manifest.json", "train", vocab)
    batch = data.collate([data.get(i) for i in range(16)], np.random.default_rng(1), train=True)
    [tokens] = batch.segments
    assert (tokens.mask.sum(1) <= torch.as_tensor(data.lengths[:, 0])).all()
    assert tokens.mask.sum() < int(data.lengths[:, 0].sum())  # something was masked
    assert (batch.decoder_input != 0).sum(1).tolist() == data.lengths[:, 1].tolist()
