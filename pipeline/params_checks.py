"""Params checks that span sections, run by `parse_params` once every section is built: an instruction
slot's `adaptor=` against the model's adaptors, and a task's metric against its instruction. Kept
apart from the schema itself (`pipeline.params`), which checks each section on its own."""

from __future__ import annotations

from ofasys.instruction import parse_instruction
from ofasys.metrics.registry import METRICS, needs
from ofasys.modalities import MODALITIES
from pipeline import run_config
from pipeline.params import Params, ParamsError, TaskParams

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
    field = MODALITIES[outputs[0].modality].output_field
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
