"""The Python API: export -> OFASys.from_pretrained -> inference(instruction, data) with typed outputs.

The model is untrained (learning is tested end to end); what is tested here is the plumbing: inputs are
materialised like shards, outputs are decoded per modality and respect their constraints.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

import ofasys
from ofasys.inference import OFASys, Prediction
from ofasys.model import ModelConfig, UniversalModel
from ofasys.text_tokenizer import train_text_tokenizer
from ofasys.training.export import save_pretrained
from ofasys.vocab import UnifiedVocab

GROUNDING = '[IMAGE:img] <BOS> which region does the text " [TEXT:query] " describe? <EOS> -> [BOX:region,add_bos,add_eos]'
VQA = "[IMAGE:img] <BOS> [TEXT:question] <EOS> -> <BOS> [TEXT:answer,closed_set] <EOS>"
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap,max_length=6] <EOS>"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    words = "zero one two three four five six seven eight nine how many digits are there which region".split()
    tok = train_text_tokenizer([" ".join(words)] * 3 + words, vocab_size=300)
    vocab = UnifiedVocab.build(tok, num_bins=16)
    vocab.save(root / "vocab.json")
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=2, ffn_dim=64, encoder_layers=1,
                         decoder_layers=1, image_stem_channels=32)
    tasks = {"vqa": {"instruction": VQA, "image_size": 32, "closed_sets": {"answer": ["one", "three", "two"]}}}
    out = save_pretrained(UniversalModel(config), config.to_dict(), root / "vocab.json", tasks, root / "final")
    return OFASys.from_pretrained(out)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_box_output_is_four_floats_in_the_original_image_pixels(pretrained):
    pred = pretrained.inference(GROUNDING, data={"img": _png(200, 100), "query": "three"}, image_size=32)
    assert isinstance(pred, Prediction)
    assert len(pred.box) == 4
    x0, y0, x1, y1 = pred.box
    assert 0 <= x0 <= 200 and 0 <= x1 <= 200 and 0 <= y0 <= 100 and 0 <= y1 <= 100


def test_closed_set_answers_come_from_the_trained_labels(pretrained):
    rows = [{"img": _png(32, 32), "question": "how many digits are there?"}] * 3
    preds = pretrained.inference(VQA, data=rows, beam_size=2)
    assert len(preds) == 3
    assert all(p.text in {"one", "two", "three"} for p in preds)


def test_closed_set_candidates_can_be_given(pretrained):
    pred = pretrained.inference(VQA, data={"img": _png(32, 32), "question": "how many"}, closed_sets={"answer": ["nine"]})
    assert pred.text == "nine"


def test_text_output_respects_max_length(pretrained):
    pred = pretrained.inference(CAPTION, data={"img": _png(40, 40)}, image_size=32)
    assert isinstance(pred.text, str)
    assert len(pred.tokens) <= 6


def test_missing_input_column_is_an_instruction_error(pretrained):
    with pytest.raises(ofasys.InstructionError, match="query"):
        pretrained.inference(GROUNDING, data={"img": _png(32, 32)})


def test_import_ofasys_pulls_in_neither_torch_nor_mlflow_nor_dvc():
    import subprocess

    code = "import sys, ofasys; ofasys.parse_instruction('[TEXT:a] -> [TEXT:b]'); print(sorted(m for m in ('torch', 'mlflow', 'dvc') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_library_never_imports_dvc_or_mlflow_at_module_level():
    import pathlib
    import re

    root = pathlib.Path(ofasys.__file__).parent
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if re.search(r"^(import|from) (dvc|mlflow)\b", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []
