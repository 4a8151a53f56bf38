"""Checkpoints written before adaptors were keyed by modality still load, and give the same logits.

The fixture (tests/fixtures/pre_modality_checkpoint, see its README.txt) was exported by the code of
commit 8478304: `segment_type.weight` (2 x d), `image_adaptor.*`, flat `image_*` config keys. Its
logits on a fixed [tokens, image, tokens] batch were recorded by that code.
"""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ofasys.data.batch import TOKENS, Batch, EncoderSegment
from ofasys.model import ModelConfig, build_model, load_model_state, upgrade_state_dict
from ofasys.training.export import load_pretrained_state

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_modality_checkpoint"
EXPORT = FIXTURE / "pretrained"


def old_config() -> ModelConfig:
    return ModelConfig.from_dict(json.loads((EXPORT / "config.json").read_text())["model"])


def old_state() -> dict[str, torch.Tensor]:
    return load_pretrained_state(EXPORT)


def fixture_batch() -> Batch:
    t = load_file(str(FIXTURE / "inputs.safetensors"))
    return Batch(task="fixture", keys=["a", "b"], decoder_input=t["decoder_input"], segments=[
        EncoderSegment(TOKENS, t["prefix_ids"], t["prefix_mask"]),
        EncoderSegment("IMAGE", t["image"]),
        EncoderSegment(TOKENS, t["suffix_ids"], t["suffix_mask"]),
    ])


def recorded_logits() -> torch.Tensor:
    return load_file(str(FIXTURE / "logits.safetensors"))["logits"]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(fixture_batch())


def test_the_fixture_is_in_the_old_layout():
    """Guards the fixture itself: if it were re-made with the current code, the tests below would
    no longer prove anything about old checkpoints."""
    state, model = old_state(), json.loads((EXPORT / "config.json").read_text())["model"]
    assert state["segment_type.weight"].shape == (2, 16) and "image_adaptor.proj.weight" in state
    assert not any(k.startswith(("adaptors.", "segment_embeddings.")) for k in state)
    assert model["image_stem_channels"] == 8 and "adaptors" not in model


def test_config_of_the_old_export_reads_into_the_image_adaptor():
    config = old_config()
    assert config.adaptors == {"IMAGE": {"stem": "conv", "stem_channels": 8, "positions": "learned", "max_grid": 4}}


def test_upgrade_renames_without_changing_a_number():
    state = old_state()
    new = upgrade_state_dict(state, old_config())
    assert torch.equal(new["segment_embeddings.tokens.weight"], state["segment_type.weight"][0:1])
    assert torch.equal(new["segment_embeddings.IMAGE.weight"], state["segment_type.weight"][1:2])
    for key, value in state.items():
        if key.startswith("image_adaptor."):
            assert torch.equal(new["adaptors.IMAGE." + key[len("image_adaptor."):]], value)
        elif key != "segment_type.weight":
            assert torch.equal(new[key], value)
    assert len(new) == len(state) + 1  # one table became two embeddings
    again = upgrade_state_dict(new, old_config())  # the current layout passes through as it is
    assert again.keys() == new.keys() and all(again[k] is v for k, v in new.items())


def test_old_checkpoint_gives_the_logits_the_old_code_recorded():
    config = old_config()
    model = build_model(config, seed=1)
    assert load_model_state(model, upgrade_state_dict(old_state(), config)) == []
    torch.testing.assert_close(logits(model), recorded_logits(), atol=1e-5, rtol=0)


def test_from_pretrained_loads_the_old_export():
    from ofasys.inference import OFASys

    loaded = OFASys.from_pretrained(EXPORT)
    torch.testing.assert_close(logits(loaded.model), recorded_logits(), atol=1e-5, rtol=0)


def test_a_modality_new_to_the_checkpoint_keeps_its_fresh_weights(caplog):
    """A model with an AUDIO adaptor loads the image-and-text checkpoint: IMAGE and core weights
    are the checkpoint's, AUDIO's are its seeded initial ones and are reported as fresh."""
    config = old_config().with_adaptors(["AUDIO"])
    model = build_model(config, seed=3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    state = upgrade_state_dict(old_state(), old_config())
    with caplog.at_level(logging.INFO, logger="ofasys.model.checkpoint_compat"):
        fresh = load_model_state(model, state)
    audio = sorted(k for k in initial if k.startswith(("adaptors.AUDIO.", "segment_embeddings.AUDIO.")))
    assert fresh == audio and "adaptors.AUDIO.proj.weight" in fresh
    assert "AUDIO" in caplog.text
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(torch.equal(loaded[k], initial[k]) for k in audio)
    # The batch has no audio, so the model computes what the old one did.
    torch.testing.assert_close(logits(model), recorded_logits(), atol=1e-5, rtol=0)


def test_from_pretrained_refuses_an_export_without_an_adaptor_its_config_lists(tmp_path):
    from ofasys.inference import OFASys

    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.safetensors", "vocab.json"):
        (export / name).write_bytes((EXPORT / name).read_bytes())
    config = json.loads((EXPORT / "config.json").read_text())
    config["model"]["adaptors"] = {"IMAGE": {}, "AUDIO": {}}
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"no weights for the AUDIO adaptor that config.json lists"):
        OFASys.from_pretrained(export)


# ---------------------------------------------------------------- what does not load


def test_the_old_layout_without_upgrade_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"'image_adaptor\..*upgrade_state_dict first"):
        load_model_state(build_model(old_config(), seed=0), old_state())


def test_a_missing_core_or_partial_modality_weight_is_an_error_naming_it():
    config = old_config()
    state = upgrade_state_dict(old_state(), config)
    for key in ("decoder_norm.weight", "adaptors.IMAGE.proj.weight", "segment_embeddings.tokens.weight"):
        partial = {k: v for k, v in state.items() if k != key}
        with pytest.raises(ValueError, match=f"lacks weights the model has: '{key}'"):
            load_model_state(build_model(config, seed=0), partial)


def test_unexpected_keys_and_shapes_are_errors_naming_them():
    config = old_config()
    state = upgrade_state_dict(old_state(), config)
    with pytest.raises(ValueError, match="weights the model does not: 'extra.weight'"):
        load_model_state(build_model(config, seed=0), {**state, "extra.weight": torch.zeros(1)})
    # A text-only config does not describe the image weights: refused, not dropped.
    with pytest.raises(ValueError, match="weights the model does not: 'adaptors.IMAGE"):
        load_model_state(build_model(ModelConfig.from_dict({**config.to_dict(), "adaptors": {}}), seed=0), state)
    wider = ModelConfig.from_dict({**config.to_dict(), "max_positions": 65})
    with pytest.raises(ValueError, match=r"'decoder_positions.weight' has shape \[64, 16\] in the checkpoint, "
                                         r"\[65, 16\] in the model"):
        load_model_state(build_model(wider, seed=0), state)


def test_upgrade_refuses_a_mixed_or_misshapen_old_layout():
    config = old_config()
    state = old_state()
    with pytest.raises(ValueError, match="mixes the layout"):
        upgrade_state_dict({**state, "segment_embeddings.IMAGE.weight": torch.zeros(1, 16)}, config)
    with pytest.raises(ValueError, match=r"'segment_type.weight' has shape \[3, 16\]"):
        upgrade_state_dict({**state, "segment_type.weight": torch.zeros(3, 16)}, config)
