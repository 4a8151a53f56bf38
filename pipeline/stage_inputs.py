"""What each pipeline stage's result depends on, as one small JSON file per stage (its DVC dep).

DVC can only depend on whole params keys that must exist, so listing `tasks.<t>` or `materialise`
under a stage made an optional section mandatory and re-ran materialisation on a mixture-weight
change. Instead the `resolve` stage validates the whole `params.yaml` (defaults filled in) and writes
each stage's slice of it here; a stage re-runs when, and only when, its slice changes. The slices
also carry a content fingerprint of each task's source data (files and the media they reference),
which params alone can't show: an appended row or a replaced image re-runs that task's stages.

Each stage still reads `params.yaml` itself (validated in full first); what it reads must be in its
slice below, which `tests/pipeline/test_stage_inputs.py` checks by editing params each way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline import run_config
from pipeline.params import Params, shards_params, to_plain

RESOLVED_DIR = Path("data/resolved")
"""Where `resolve` writes the slices (a DVC output; the stages' deps point at files inside it)."""

Fingerprint = Callable[[str], Mapping[str, Any]]
"""task name -> JSON-able content fingerprint of its source data."""


def media_columns(instruction: str) -> list[str]:
    """Columns of the instruction's media slots (their files are read at materialisation)."""
    from ofasys.instruction import parse_instruction
    from ofasys.modalities import MODALITIES

    parsed = parse_instruction(instruction)
    return sorted({slot.column for t in parsed.templates for _, slot in t.slots()
                   if slot.column and MODALITIES[slot.modality].media_files})


def model_limits(params: Params) -> dict[str, Any]:
    """The model fields that decide whether a sample fits (materialisation rejects what doesn't)."""
    config = run_config.model_config(params, vocab_size=1)  # the vocabulary's size does not bound a sample
    return {"max_positions": config.max_positions, "adaptors": config.adaptors}


def vocab_text_input(params: Params, name: str) -> dict[str, Any]:
    """What `vocab_text@<name>` reads besides the task's raw rows: whether the task is a vocabulary
    task and, if so, its text and phone slots (a reworded prompt leaves this unchanged)."""
    from ofasys.instruction import parse_instruction
    from ofasys.vocab_corpus import vocab_slot_spec

    if name not in params.vocab_task_names():
        return {"in_vocab": False}
    return {"in_vocab": True, "slots": vocab_slot_spec(parse_instruction(params.tasks[name].instruction))}


def vq_images_input(params: Params, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """What `vq_images@<name>` reads besides the task's raw rows: whether the task gives the VQ
    tokenizer images and, if so, which columns at which size, and its data's fingerprint (the
    media files its rows name)."""
    from pipeline.params_checks import effective_vq_config, image_columns, vq_task_names

    if name not in vq_task_names(params):
        return {"in_vq": False}
    return {"in_vq": True, "columns": image_columns(params.tasks[name].instruction),
            "image_size": effective_vq_config(params).image_size, "data": dict(data)}


def vq_input(params: Params) -> dict[str, Any]:
    """What the `vq` stage reads besides the collected images: `assets.vq` with the seed and the
    tasks it learns from, and the content hash of a user's VQ file (which DVC does not track)."""
    from pipeline.params_checks import vq_task_names

    vq = params.assets.vq
    if vq is None:
        return {"vq": None}
    slice_: dict[str, Any] = {"vq": to_plain(vq), "seed": params.seed, "tasks": sorted(vq_task_names(params))}
    if vq.path:
        from ofasys.data.io import sha256_file

        slice_["file_sha256"] = sha256_file(vq.path)
    return slice_


def stage_slices(params: Params, fingerprint: Fingerprint) -> dict[str, Any]:
    """{relative path under RESOLVED_DIR: JSON-able slice} for every stage of dvc.yaml."""
    plain = to_plain(params)
    data = {name: dict(fingerprint(name)) for name in params.tasks}
    slices: dict[str, Any] = {}
    for name, task in plain["tasks"].items():
        # ingest copies rows, it never opens the media they list: a replaced image re-runs materialise only
        source_data = {k: v for k, v in data[name].items() if k != "media"}
        slices[f"ingest/{name}.json"] = {"seed": params.seed, "source": task["source"], "data": source_data}
        slices[f"materialise/{name}.json"] = {
            "seed": params.seed,
            "task": {k: task[k] for k in ("name", "instruction", "source", "image_size")},
            "materialise": shards_params(params.materialise),
            "model_limits": model_limits(params),
            "data": data[name],
        }
        slices[f"vocab_text/{name}.json"] = vocab_text_input(params, name)
        slices[f"vq_images/{name}.json"] = vq_images_input(params, name, data[name])
    # Not the instructions: the vocabulary reads data/vocab_text (slot values, no prompt wording), so
    # rewording a prompt or adding a task outside assets.vocab_tasks leaves `assets` as it is.
    # Not assets.vq either: the vq stage reads it (vq.json), the vocabulary only sizes the code block
    vocab_assets = {k: v for k, v in plain["assets"].items() if k != "vq"}
    slices["assets.json"] = {"assets": vocab_assets, "vocab_tasks": sorted(params.vocab_task_names())}
    slices["vq.json"] = vq_input(params)
    slices["train.json"] = {
        "seed": params.seed,
        "model": plain["model"],
        "train": plain["train"],
        "weights": {name: task["weight"] for name, task in plain["tasks"].items()},
        "tracking": plain["tracking"],
    }
    slices["evaluate.json"] = {
        "evaluate": plain["evaluate"],
        "tasks": {name: {"metric": task["metric"]} for name, task in plain["tasks"].items()},
        "tracking": plain["tracking"],
    }
    slices["infer.json"] = {"infer": plain["infer"], "tracking": plain["tracking"]}
    return slices
