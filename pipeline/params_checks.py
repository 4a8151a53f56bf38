"""Params checks that span sections, run by `parse_params` once every section is built: an instruction
slot's `adaptor=` against the model's adaptors, and a task's metric against its instruction. Kept
apart from the schema itself (`pipeline.params`), which checks each section on its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ofasys.data.members import output_fields, slot_handler
from ofasys.instruction import parse_instruction
from ofasys.metrics.registry import METRICS, needs
from ofasys.modalities import MODALITIES
from pipeline import run_config
from pipeline.params import Params, ParamsError, TaskParams, VQParams

NEED_INPUTS: dict[str, tuple[str, str]] = {
    "databases": ("database", "an input that names its database (a schema slot, preprocess=database); add "
                              "one, or use sql_em"),
}
"""Metric need (`ofasys.metrics.registry.Metric.needs`) -> what an input slot records for it
(`Modality.records_meta`) and how to say so: execution accuracy runs SQL on the database a STRUCT
schema names."""


def check_adaptor_choices(params: Params) -> None:
    """A slot's `adaptor=` must name what the model's adaptor for that modality is built as
    (`adaptor=image_resnet` needs a ResNet image stem), or training would silently use another."""
    try:
        config = run_config.model_config(params, vocab_size=1)
    except ValueError as err:
        raise ParamsError(f"model: {err}") from None
    for name, task in params.tasks.items():
        for template in parse_instruction(task.instruction).templates:
            for _, slot in template.slots():
                choice = slot.attrs.get("adaptor")
                if choice in (None, "default") or slot.modality not in config.adaptors:
                    continue
                fix = MODALITIES[slot.modality].adaptor_fits(choice, config.adaptor(slot.modality))
                if fix:
                    raise ParamsError(f"tasks.{name}.instruction: [{slot.modality}:{slot.column}] {fix}; "
                                      f"set it under model.adaptors.{slot.modality}, or drop adaptor= from the slot")


def check_metric_fits(name: str, task: TaskParams) -> None:
    """The metric must score what the task outputs and find what it needs among the inputs; checked
    when params load, so a box metric on a caption fails before any work, not in `evaluate` after
    training."""
    slots = list(parse_instruction(task.instruction).templates[0].slots())
    outputs = [slot for side, slot in slots if side == "output" and slot.column]
    if not outputs:
        return  # nothing to evaluate; the evaluate stage says so
    scores = METRICS[task.metric].outputs
    field = output_fields(parse_instruction(task.instruction).templates[0])[outputs[0].column]
    if field not in scores:
        fitting = [m for m, spec in METRICS.items() if field in spec.outputs]
        raise ParamsError(f"tasks.{name}.metric: {task.metric} scores {' or '.join(scores)} outputs, but the "
                          f"scored output [{outputs[0].modality}:{outputs[0].column}] is {field}; use one of "
                          f"{', '.join(fitting) or '(none yet)'}")
    inputs = [slot for side, slot in slots if side == "input" and slot.column]
    for need in sorted(needs(task.metric)):
        if need == "masked_inputs" and not any(slot.attrs.get("mask_ratio") for slot in inputs):
            raise ParamsError(f"tasks.{name}.metric: {task.metric}'s baseline copies the masked input, but no "
                              "input slot has mask_ratio; add mask_ratio= to the text the output restores, "
                              "or use exact_match")
        if need in NEED_INPUTS:
            meta, what = NEED_INPUTS[need]
            if not any(meta in MODALITIES[slot.modality].records_meta(slot.attrs) for slot in inputs):
                raise ParamsError(f"tasks.{name}.metric: {task.metric} needs {what}")


def speech_recognition_tasks(params: Params) -> list[str]:
    """Tasks that recognise speech: an AUDIO input and the `wer` metric (what scores generated speech)."""
    found = []
    for name, task in params.tasks.items():
        slots = parse_instruction(task.instruction).templates[0].slots()
        if task.metric == "wer" and any(side == "input" and slot_handler(slot).speech for side, slot in slots):
            found.append(name)
    return found


def check_transcriber(params: Params) -> None:
    """A metric that transcribes generated speech (`tts_wer`) needs the run's own recogniser; refused at
    params load rather than after training."""
    for name, task in params.tasks.items():
        if "transcribe" in needs(task.metric) and not speech_recognition_tasks(params):
            raise ParamsError(f"tasks.{name}.metric: {task.metric} transcribes the generated speech with the run's "
                              "speech recognition task, and there is none (a task with an AUDIO input and metric "
                              "wer); add one, or use fbank_l1")


def check_input_text(name: str, task: TaskParams) -> None:
    """A metric that scores outputs against their input text (`motion_match`, `tts_wer`) needs one."""
    if "input_texts" not in needs(task.metric):
        return
    slots = parse_instruction(task.instruction).templates[0].slots()
    if not any(side == "input" and slot.column and slot_handler(slot).text_values for side, slot in slots):
        raise ParamsError(f"tasks.{name}.metric: {task.metric} scores each output against the text it was "
                          "generated from, and the instruction has no TEXT input; add one")


def image_code_slots(instruction: str) -> list:
    """The IMAGE slots of an instruction that store the image as VQ codes (`preprocess=image_vqgan`)."""
    return [slot for template in parse_instruction(instruction).templates for _, slot in template.slots()
            if slot_handler(slot).vocab_block == "codes"]


def image_columns(instruction: str) -> list[str]:
    """The columns an instruction reads as IMAGE (pixels or codes): what the VQ tokenizer may learn from."""
    return sorted({slot.column for template in parse_instruction(instruction).templates
                   for _, slot in template.slots() if slot_handler(slot).pictures and slot.column})


def vq_task_names(params: Params) -> tuple[str, ...]:
    """The tasks whose train images the VQ tokenizer learns: `assets.vq.tasks`, else the tasks that
    store images as codes (none without `assets.vq`)."""
    vq = params.assets.vq
    if vq is None:
        return ()
    if vq.tasks is not None:
        return tuple(vq.tasks)
    return tuple(name for name, task in params.tasks.items() if image_code_slots(task.instruction))


def effective_vq_config(params: Params):
    """The `VQConfig` image codes are made with: the file's at `assets.vq.path`, else the one the vq
    stage trains (None without `assets.vq`)."""
    vq = params.assets.vq
    if vq is None:
        return None
    if vq.path:
        from ofasys.vq_config import read_vq_header

        return read_vq_header(vq.path)[0]
    return vq.config(params.seed)


def check_image_codes(params: Params, raw_assets) -> None:
    """Tasks that store images as VQ codes need `assets.vq`; its codebook must be the vocabulary's
    code block; a slot's `length=` must be the grid's codes; a given VQ file must exist and agree with
    any shape field written beside it. Checked when params load, so none of it fails after hours."""
    vq = params.assets.vq
    coded = {name: image_code_slots(task.instruction) for name, task in params.tasks.items()}
    coded = {name: slots for name, slots in coded.items() if slots}
    if vq is None:
        if coded:
            name, slots = next(iter(coded.items()))
            raise ParamsError(f"tasks.{name}.instruction: [IMAGE:{slots[0].column},preprocess=image_vqgan] stores "
                              "the image as VQ codes, which needs a VQ image tokenizer: add assets.vq (e.g. "
                              "vq: {grid: 8, codebook_size: 256} with num_codes: 256), or assets.vq.path for a "
                              "local VQ file")
        return
    if vq.path:
        from ofasys.vq_config import VQError, read_vq_header

        path = Path(vq.path)
        if not path.is_file():
            raise ParamsError(f"assets.vq.path: file not found: {vq.path} (relative to {Path.cwd()}); point it at a "
                              "VQ file written by ofasys.vq.save_vq, or remove path to train one in the vq stage")
        try:
            config, _ = read_vq_header(path)
        except VQError as err:
            raise ParamsError(f"assets.vq.path: {err}") from None
        given = raw_assets.get("vq") or {} if isinstance(raw_assets, Mapping) else {}
        for key in VQParams.SHAPE_FIELDS:
            if key in given and given[key] != getattr(config, key):
                raise ParamsError(f"assets.vq.{key}: {given[key]}, but the VQ file at assets.vq.path has "
                                  f"{key} {getattr(config, key)}; remove {key} (the file decides) or use another file")
    config = effective_vq_config(params)
    if params.assets.num_codes != config.codebook_size:
        raise ParamsError(f"assets.num_codes: {params.assets.num_codes}, but the VQ tokenizer has "
                          f"{config.codebook_size} codes; set assets.num_codes: {config.codebook_size} (the "
                          "vocabulary holds one id per code)")
    for name, slots in coded.items():
        for slot in slots:
            length = slot.attrs.get("length")
            if length is not None and int(length) != config.grid ** 2:
                raise ParamsError(f"tasks.{name}.instruction: [IMAGE:{slot.column}] length={length}, but the VQ "
                                  f"tokenizer makes {config.grid} x {config.grid} = {config.grid ** 2} codes per "
                                  f"image; write length={config.grid ** 2} or change assets.vq.grid")
    for name in vq.tasks or ():
        if name not in params.tasks:
            import difflib

            close = difflib.get_close_matches(name, list(params.tasks), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"tasks: {', '.join(params.tasks)}"
            raise ParamsError(f"assets.vq.tasks: {name!r} is not a task; {hint}")
        if not image_columns(params.tasks[name].instruction):
            raise ParamsError(f"assets.vq.tasks: task {name!r} has no IMAGE column to learn codes from; list tasks "
                              "with images")
    if not vq.path and not vq_task_names(params):
        raise ParamsError("assets.vq: no task gives the VQ tokenizer images to learn from (no task has a "
                          "preprocess=image_vqgan slot); list tasks with images in assets.vq.tasks, or remove assets.vq")
