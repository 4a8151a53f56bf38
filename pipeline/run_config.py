"""How validated params become what the stages run on: the library's ModelConfig and TrainConfig,
and the fingerprint a task's shards record.

Kept apart from `pipeline.params` (the schema and its checks) because these decide stage outputs:
a stage that calls them lists this file among its DVC deps, while a change to the schema reaches a
stage only through the params slice `resolve` writes for it (`pipeline.stage_inputs`).
"""

from __future__ import annotations

import hashlib
import json

from pipeline.params import Params, shards_params, to_plain


def model_config(params: Params, vocab_size: int):
    """The `model:` section as an `ofasys.model.ModelConfig` (a named `preset` plus overrides);
    `vocab_size` comes from the unified vocabulary, never from params. `adaptors` entries are merged per
    modality over the preset's, and every embedded modality the tasks use (IMAGE, AUDIO, ...) gets an adaptor with its defaults unless configured."""
    from ofasys.model.config import ModelConfig, upgrade_legacy_keys

    fields = upgrade_legacy_keys(params.model)
    preset = fields.pop("preset", None)
    fields["vocab_size"] = vocab_size
    base = ModelConfig.preset(preset) if preset else ModelConfig()
    adaptors = {name: dict(raw) for name, raw in base.adaptors.items()}
    for name, raw in dict(fields.pop("adaptors", None) or {}).items():
        adaptors[name] = {**adaptors.get(name, {}), **dict(raw or {})}
    fields["output_heads"] = {name: dict(raw or {}) for name, raw in dict(fields.get("output_heads") or {}).items()}
    config = ModelConfig.preset(preset, adaptors=adaptors, **fields) if preset else \
        ModelConfig.from_dict({**fields, "adaptors": adaptors})
    return config.with_adaptors(embedded_modalities(params)).with_output_heads(frame_output_modalities(params))


def _slots(params: Params):
    """(side, slot) of every slot of every template of every task."""
    from ofasys.instruction import parse_instruction

    for task in params.tasks.values():
        for template in parse_instruction(task.instruction).templates:
            yield from template.slots()


def embedded_modalities(params: Params) -> list[str]:
    """The modalities the tasks' input slots use that the model embeds with an adaptor of their own."""
    from ofasys.modalities import MODALITIES

    found = {slot.modality for side, slot in _slots(params) if side == "input"
             and MODALITIES[slot.modality].adaptor_config is not None
             and not MODALITIES[slot.modality].is_token_run(slot.attrs.get("preprocess"))}
    return sorted(found)


def frame_output_modalities(params: Params) -> list[str]:
    """The modalities the tasks generate as frames (MOTION, speech), each needing an output head."""
    from ofasys.data.members import slot_handler

    return sorted({slot.modality for side, slot in _slots(params) if side == "output" and slot_handler(slot).frame_output})


def train_config(params: Params):
    """The `train:` section as an `ofasys.training.TrainConfig`, seeded by the top-level `seed`."""
    from ofasys.training.config import TrainConfig

    return TrainConfig.from_dict({"seed": params.seed, **params.train})


def task_hash(params: Params, name: str) -> str:
    """Fingerprint of the params that determine a task's shards (recorded in its manifest)."""
    task = params.tasks[name]
    blob = {
        "seed": params.seed,
        # Not `weight` or `metric`: a new mixture or metric must leave the shards byte-identical.
        "task": {k: to_plain(getattr(task, k)) for k in ("name", "instruction", "source", "image_size")},
        # Not `assets`: the vocabulary is fingerprinted on its own (the manifest's assets.vocab), and
        # a list of vocabulary tasks that yields the same vocabulary must leave the shards as they are.
        "materialise": shards_params(params.materialise),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
