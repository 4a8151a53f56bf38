"""The exported pretrained dir: safetensors, tied weights, atomic replace, vocab checks."""

import json
from pathlib import Path

import pytest
import torch

from ofasys.training import load_pretrained_config, load_pretrained_state, save_pretrained
from ofasys.training.export import tasks_info_from_manifests, vocab_fingerprint_of_manifests

from .fakes import FakeModel, make_vocab


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    return path, make_vocab(path)


def test_round_trip_with_tied_weights_is_deterministic(tmp_path, vocab):
    vocab_path, fingerprint = vocab
    model = FakeModel(tie=True)
    info = {"caption": {"instruction": "[IMAGE:img] -> [TEXT:cap]", "slots": []}}
    out = save_pretrained(model, {"d": 16}, vocab_path, info, tmp_path / "export", vocab_fingerprint=fingerprint)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = load_pretrained_config(out)
    assert config == {"format": 1, "model": {"d": 16}, "vocab_fingerprint": fingerprint, "tasks": info}
    assert (out / "vocab.json").read_bytes() == vocab_path.read_bytes()
    state = load_pretrained_state(out)
    assert set(state) == set(model.state_dict())
    assert state["out.weight"] is state["embed.weight"]  # stored once, restored as one tensor
    fresh = FakeModel(tie=True, seed=1)
    fresh.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    first = (out / "model.safetensors").read_bytes()
    save_pretrained(model, {"d": 16}, vocab_path, info, out)  # overwrite in place
    assert (out / "model.safetensors").read_bytes() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_bf16_weights_are_exported_as_float32(tmp_path, vocab):
    model = FakeModel().to(torch.bfloat16)
    out = save_pretrained(model, {}, vocab[0], {}, tmp_path / "e")
    assert {t.dtype for t in load_pretrained_state(out).values()} == {torch.float32}


def test_wrong_vocab_fingerprint_is_refused(tmp_path, vocab):
    from ofasys.vocab import VocabMismatchError

    with pytest.raises(VocabMismatchError):
        save_pretrained(FakeModel(), {}, vocab[0], {}, tmp_path / "e", vocab_fingerprint="0" * 64)
    assert not (tmp_path / "e").exists()


def test_weights_file_is_safetensors_not_pickle(tmp_path, vocab):
    out = save_pretrained(FakeModel(), {}, vocab[0], {}, tmp_path / "e")
    raw = (out / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "embed.weight" in header and header["__metadata__"]["format"] == "pt"


def test_manifest_helpers():
    manifests = {
        "b": {"instruction": "x", "image_size": 64, "slots": [1], "closed_sets": {}, "splits": {}, "assets": {"vocab": "f"}},
        "a": {"instruction": "y", "assets": {"vocab": "f"}},
    }
    assert tasks_info_from_manifests(manifests) == {  # the assets say which VQ grid an image output is made on
        "a": {"instruction": "y", "assets": {"vocab": "f"}},
        "b": {"instruction": "x", "image_size": 64, "slots": [1], "closed_sets": {}, "assets": {"vocab": "f"}}}
    assert vocab_fingerprint_of_manifests(manifests) == "f"
    with pytest.raises(ValueError, match="different vocabularies"):
        vocab_fingerprint_of_manifests({**manifests, "c": {"assets": {"vocab": "g"}}})
    assert vocab_fingerprint_of_manifests({"a": {}}) is None


def test_export_bytes_are_identical_across_processes(tmp_path, vocab):
    """safetensors writes its metadata from a hash map (random order per process): we canonicalise."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, '.');"
            "from tests.training.fakes import FakeModel;"
            "from ofasys.training import save_pretrained;"
            "save_pretrained(FakeModel(tie=True), {'d': 16}, sys.argv[1], {}, sys.argv[2])")
    save_pretrained(FakeModel(tie=True), {"d": 16}, vocab[0], {}, tmp_path / "here")
    outs = [(tmp_path / "here" / "model.safetensors").read_bytes()]
    for k in range(2):
        out = tmp_path / f"e{k}"
        subprocess.run([sys.executable, "-c", code, str(vocab[0]), str(out)], check=True,
                       cwd=Path(__file__).resolve().parents[2])
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1] == outs[2]
