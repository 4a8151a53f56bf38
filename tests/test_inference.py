"""The Python API: export -> OFASys.from_pretrained -> inference(instruction, data) with typed outputs.

The model is untrained (learning is tested end to end); what is tested here is the plumbing: inputs are
materialised like shards, outputs are decoded per modality and respect their constraints.
"""

from __future__ import annotations

import io
import re
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
from pipeline.registry import from_registry

GROUNDING = '[IMAGE:img] <BOS> which region does the text " [TEXT:query] " describe? <EOS> -> [BOX:region,add_bos,add_eos]'
VQA = "[IMAGE:img] <BOS> [TEXT:question] <EOS> -> <BOS> [TEXT:answer,closed_set] <EOS>"
CAPTION = "[IMAGE:img] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap,max_length=6] <EOS>"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An untrained tiny model exported like the train stage does."""
    root = tmp_path_factory.mktemp("pretrained")
    words = "zero one two three four five six seven eight nine how many digits are there which region".split()
    tok = train_text_tokenizer([" ".join(words)] * 3 + words, vocab_size=300)
    vocab = UnifiedVocab.build(tok, num_bins=16)
    vocab.save(root / "vocab.json")
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    config = ModelConfig(vocab_size=vocab.size, d_model=32, heads=2, ffn_dim=64, encoder_layers=1,
                         decoder_layers=1, adaptors={"IMAGE": {"stem_channels": 32}})
    tasks = {"vqa": {"instruction": VQA, "image_size": 32, "closed_sets": {"answer": ["one", "three", "two"]}}}
    return save_pretrained(UniversalModel(config), config.to_dict(), root / "vocab.json", tasks, root / "final")


@pytest.fixture(scope="module")
def pretrained(export_dir):
    return OFASys.from_pretrained(export_dir)


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


# --------------------------------------------------------------------------------------------------
# models:/<name>@<alias>: the MLflow store is named explicitly, never found by the working directory


@pytest.fixture(scope="module")
def registry(export_dir, tmp_path_factory):
    """A real sqlite MLflow store holding the export as version 1 of model `m`, alias `champion`."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(export_dir), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("m")
    version = client.create_model_version("m", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)
    return root, uri


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory with no MLFLOW_* environment: nothing may appear in it."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _store_files(root):
    return sorted(p.name for p in root.iterdir())


def test_registry_uri_loads_from_another_directory_with_the_store_given(registry, elsewhere):
    root, uri = registry
    before = _store_files(root)
    model = from_registry("models:/m@champion", tracking_uri=uri)
    pred = model.inference(VQA, data={"img": _png(32, 32), "question": "how many"})
    assert pred.text in {"one", "two", "three"}
    assert from_registry("models:/m/1", tracking_uri=uri).config == model.config
    assert list(elsewhere.iterdir()) == []  # no mlflow.db, no mlruns where the caller stands
    assert _store_files(root) == before


def test_without_a_store_argument_the_environment_names_it_and_nothing_else_does(registry, elsewhere,
                                                                                  monkeypatch):
    with pytest.raises(ValueError, match="no MLflow store.*tracking_uri=.*MLFLOW_TRACKING_URI"):
        from_registry("models:/m@champion")
    assert list(elsewhere.iterdir()) == []  # no default store was made up in the working directory
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry[1])
    assert from_registry("models:/m@champion").vocab.size > 0
    assert list(elsewhere.iterdir()) == []


def test_a_missing_sqlite_store_names_where_it_looked_and_creates_nothing(elsewhere, tmp_path):
    absent = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(FileNotFoundError, match=f"no file {absent}"):
        from_registry("models:/m@champion", tracking_uri=f"sqlite:///{absent}")
    with pytest.raises(FileNotFoundError, match=f"no file {elsewhere / 'mlflow.db'}.*working directory"):
        from_registry("models:/m@champion", tracking_uri="sqlite:///mlflow.db")
    assert list(elsewhere.iterdir()) == [] and not absent.parent.exists()


def test_a_relative_sqlite_store_is_relative_to_the_working_directory(registry, monkeypatch):
    root, _ = registry
    monkeypatch.chdir(root)
    assert from_registry("models:/m@champion", tracking_uri="sqlite:///mlflow.db").vocab.size > 0


@pytest.mark.parametrize("uri, message", [
    ("models:/nope@champion", "no registered model 'nope' in the MLflow store {uri} \\(it has: m\\)"),
    ("models:/m@best", "model 'm' has no alias 'best' in the MLflow store {uri} \\(aliases: champion\\)"),
    ("models:/m/7", "model 'm' has no version 7 in the MLflow store {uri}"),
])
def test_an_unknown_model_alias_or_version_names_the_store(registry, elsewhere, uri, message):
    from pipeline.registry import ModelNotFoundError

    _, store = registry
    with pytest.raises(ModelNotFoundError, match=message.format(uri=re.escape(store))):
        from_registry(uri, tracking_uri=store)
    assert list(elsewhere.iterdir()) == []


def test_the_library_points_registry_uris_to_the_pipeline(export_dir):
    with pytest.raises(ValueError, match=r"pipeline\.registry\.from_registry"):
        OFASys.from_pretrained("models:/m@champion")


def test_a_list_runs_in_length_sorted_batches_and_returns_in_row_order(pretrained):
    questions = ["how many digits are there in the image which region", "how", "which region", "two",
                 "how many digits are there", "many"]
    rows = [{"img": _png(32, 32), "question": q} for q in questions]
    batched = pretrained.inference(VQA, data=rows, batch_size=2, beam_size=2)
    alone = [pretrained.inference(VQA, data=row, beam_size=2) for row in rows]
    assert [(p.text, p.tokens) for p in batched] == [(p.text, p.tokens) for p in alone]


def test_length_sorted_batches_sort_each_window_and_keep_row_indices():
    from ofasys.evaluation import SORT_WINDOW, length_sorted_batches

    lengths = [7, 1, 5, 3, 3, 9, 2] * SORT_WINDOW  # 7/4 windows of batches of 4
    made = []
    batches = list(length_sorted_batches(lengths, 4, lambda s: s[1], lambda i, n: made.append(i) or (i, n)))
    assert made == list(range(len(lengths)))  # each row made once, with its own index
    window = 4 * SORT_WINDOW  # rows per window; a window is SORT_WINDOW batches (the last one fewer)
    for first_batch, start in ((0, 0), (SORT_WINDOW, window)):
        flat = [s for _, samples in batches[first_batch: first_batch + SORT_WINDOW] for s in samples]
        assert [n for _, n in flat] == sorted(lengths[start: start + window])
        assert all(lengths[i] == n for i, n in flat)
    assert sorted(i for picked, _ in batches for i in picked) == list(range(len(lengths)))
