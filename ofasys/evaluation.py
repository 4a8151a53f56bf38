"""Batch prediction over a materialised split, and what evaluation reads from its samples: the scored
output column and each sample's database. The metrics themselves, with their baselines, are in
`ofasys.metrics`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ofasys.generation.frames import generated_frames


@dataclass(frozen=True)
class SamplePrediction:
    """One generated output with the sample's identity and reference."""

    key: str
    outputs: dict[str, Any]
    """Decoded outputs by column: TEXT -> str, BOX -> [x0, y0, x1, y1] in original pixels, ..."""
    refs: dict[str, Any]
    """Raw reference values recorded in the shard at materialisation."""
    tokens: list[int]
    inputs: dict[str, str] = field(default_factory=dict)
    """What each input column held, as recorded at materialisation (text, or a media path)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the raw row came from: `source`, `source_row`, `source_id` (the source's own id column)."""
    row: int | None = None
    """The sample's row in its raw split."""

    @property
    def row_id(self) -> str:
        """The id a user finds the row by: the source's own id column, else its row in the source
        file, else its row in the raw split."""
        for value in (self.source.get("source_id"), self.source.get("source_row"), self.row):
            if value is not None:
                return str(value)
        return self.key


SORT_WINDOW = 8
"""`predict` sorts this many batches' worth of samples by encoder length before batching them."""


def predict(
    model: torch.nn.Module,
    task_data: Any,
    *,
    beam_size: int = 1,
    batch_size: int = 64,
    max_samples: int = 0,
    indices: Sequence[int] | None = None,
    progress: Any = None,
) -> Iterator[SamplePrediction]:
    """Generate for every sample of `task_data` (a `ShardTaskData`), in index order, batched.

    Samples are batched by length: each window of `SORT_WINDOW` batches is sorted by encoder length
    (an audio clip's frames, a question's tokens) before it is cut into batches, so that a batch pads
    little; the predictions still come out in index order, and are the same as one sample at a time.
    `progress` is an optional callable receiving the number of samples just finished (e.g. a tqdm
    `update`), so callers choose how progress is shown.
    """
    model.eval()
    order = list(indices) if indices is not None else list(range(len(task_data)))
    if max_samples:
        order = order[:max_samples]
    lengths = encoder_length_fn(task_data.instruction, getattr(model, "config", None))
    made: dict[int, SamplePrediction] = {}
    done = 0
    for picked, samples in length_sorted_batches(order, batch_size, lengths, lambda _, i: task_data.get(i)):
        made.update(zip(picked, _predict_batch(model, task_data, samples, beam_size)))
        if progress is not None:
            progress(len(picked))
        while done in made:  # in index order, as soon as the predictions before it are made
            yield made.pop(done)
            done += 1


def length_sorted_batches(rows: Sequence[Any], batch_size: int, length: Callable[[Any], int],
                          make: Callable[[int, Any], Any]) -> Iterator[tuple[list[int], list[Any]]]:
    """(row indices, samples) batches of `rows`: each window of `SORT_WINDOW` batches is made into
    samples (`make(index, row)`), sorted by `length`, then cut into batches of `batch_size`, so a
    batch pads little. Results are the same in any order when a sample's key is its row index."""
    for start in range(0, len(rows), batch_size * SORT_WINDOW):
        window = [make(start + j, row) for j, row in enumerate(rows[start: start + batch_size * SORT_WINDOW])]
        ranked = sorted(range(len(window)), key=lambda j: (length(window[j]), j))
        for first in range(0, len(ranked), batch_size):
            picked = ranked[first: first + batch_size]
            yield [start + j for j in picked], [window[j] for j in picked]


def encoder_length_fn(instruction: Any, config: Any):
    """sample -> the encoder positions of `instruction`'s input slots (0 for all when the model's
    config is unknown: no sorting)."""
    from ofasys.data.members import slot_handler, slot_member
    from ofasys.instruction.ast import Slot

    if config is None:
        return lambda sample: 0
    slots = [item for item in instruction.templates[0].resolved_inputs() if isinstance(item, Slot)]

    def length(sample: Any) -> int:
        return sum(slot_handler(slot).encoder_positions(sample.arrays[slot_member(slot)], slot.attrs, config)
                   for slot in slots if slot_member(slot) in sample.arrays)
    return length


def _predict_batch(model: torch.nn.Module, task_data: Any, samples: Sequence[Any],
                   beam_size: int) -> list[SamplePrediction]:
    batch = task_data.collate_for_generation(samples)
    plans = [task_data.plan(s) for s in samples]
    with torch.inference_mode():
        generated = model.generate(batch, plans, beam_size=beam_size)
        logprobs = scored_tokens(model, batch, plans, generated)
        frames = generated_frames(model, batch, plans, generated, [s.key for s in samples], task_data.collator)
    return [
        SamplePrediction(
            key=sample.key,
            outputs=plan.decode(tokens, sample.meta, scores, made),
            refs=dict(sample.meta.get("refs", {})),
            tokens=list(tokens),
            inputs=dict(sample.meta.get("inputs", {})),
            source=dict(sample.meta.get("source", {})),
            row=sample.meta.get("row"),
        )
        for sample, plan, tokens, scores, made in zip(samples, plans, generated, logprobs, frames)
    ]


def scored_tokens(model: torch.nn.Module, batch: Any, plans: Sequence[Any], generated: Sequence[Sequence[int]]):
    """Per sample, each generated id's log-probability when a plan decodes objects that carry a score
    (a repeat group: detection), else None per sample (nothing needs them)."""
    if not any(step.kind == "repeat" for plan in plans for step in plan.steps):
        return [None] * len(generated)
    return model.token_logprobs(batch, generated)


def primary_output(task_data: Any) -> str:
    """The column the task's metric is computed on: the first output slot that names a column."""
    instruction = task_data.instruction
    for side, slot in instruction.templates[0].slots():
        if side == "output" and slot.column:
            return slot.column
    raise ValueError(f"task {task_data.name!r}: no output slot names a column; nothing to evaluate")


def sample_databases(task_data: Any, count: int) -> list[str]:
    """The database of each of the first `count` samples (index order): the `database` a column of
    the sample recorded in its meta at materialisation (a STRUCT schema naming its SQLite file).
    Relative paths are relative to the working directory (the project directory under the pipeline).
    ValueError naming the sample when one has none, or several different ones."""
    out = []
    for i in range(count):
        sample = task_data.get(i)
        found = sorted({str(m["database"]) for m in sample.meta.get("meta", {}).values()
                        if isinstance(m, dict) and m.get("database")})
        if len(found) != 1:
            what = "no database" if not found else f"several databases {found}"
            raise ValueError(f"sample {sample.key} names {what}; execution metrics need exactly one: give its "
                             "STRUCT schema value a \"database\" (the SQLite file it describes)")
        out.append(found[0])
    return out


def _output_slot(task_data: Any, column: str):
    for side, slot in task_data.instruction.templates[0].slots():
        if side == "output" and slot.column == column:
            return slot
    raise ValueError(f"task {task_data.name!r} has no output column {column!r}")


def is_frame_output(task_data: Any, column: str) -> bool:
    """Whether `column` is generated as frames (MOTION, speech): its reference is the stored array, not
    a value recorded in the sample's json."""
    from ofasys.data.members import slot_handler

    return slot_handler(_output_slot(task_data, column)).frame_output


def references(task_data: Any, column: str, count: int) -> list[Any]:
    """The reference of `column` for each of the first `count` samples: the value recorded at
    materialisation, or for a frame output its stored array in the decoded output's units (a motion's
    features, speech's log-mel frames), so outputs and references are compared alike."""
    if not is_frame_output(task_data, column):
        return [task_data.get(i).meta.get("refs", {}).get(column) for i in range(count)]
    from ofasys.data.members import slot_handler, slot_member

    slot = _output_slot(task_data, column)
    handler, member = slot_handler(slot), slot_member(slot)
    return [handler.decode_frames(task_data.get(i).arrays[member]) for i in range(count)]


def input_texts(task_data: Any, count: int) -> list[str | None]:
    """The text each of the first `count` samples was given (its first TEXT input column, as recorded at
    materialisation): the label a generated motion is of, the sentence generated speech says."""
    from ofasys.data.members import slot_handler

    column = next((slot.column for side, slot in task_data.instruction.templates[0].slots()
                   if side == "input" and slot.column and slot_handler(slot).text_values), None)
    if column is None:
        raise ValueError(f"task {task_data.name!r} has no TEXT input; its metric scores outputs against their input text")
    return [task_data.get(i).meta.get("inputs", {}).get(column) for i in range(count)]


def transcriber(model: torch.nn.Module, asr_data: Any, batch_size: int = 64) -> Any:
    """A function that transcribes raw T x 80 log-mel arrays (generated speech) with `asr_data`'s task
    (an AUDIO input, a TEXT output): each is normalised per utterance as materialisation does, put in
    that task's AUDIO slot, and decoded greedily; a missing output (None) is heard as nothing ("")."""
    from ofasys.data.collate import Sample
    from ofasys.data.members import slot_handler, slot_member
    from ofasys.modalities.audio import utterance_normalised

    slot = next((slot for side, slot in asr_data.instruction.templates[0].slots()
                 if side == "input" and slot_handler(slot).speech), None)
    if slot is None:
        raise ValueError(f"task {asr_data.name!r} has no AUDIO input to transcribe speech with")
    member, column = slot_member(slot), primary_output(asr_data)

    def transcribe(frames: Sequence[Any]) -> list[str]:
        texts = [""] * len(frames)
        # batched by length (a batch pads every clip to its longest), transcripts kept in input order
        real = sorted((i for i, f in enumerate(frames) if f is not None and len(f)), key=lambda i: (len(frames[i]), i))
        for start in range(0, len(real), batch_size):
            rows = real[start : start + batch_size]
            samples = [Sample(f"heard-{i:09d}", {}, {member: utterance_normalised(np.asarray(frames[i], np.float32))
                                                     .astype(np.float16)}) for i in rows]
            batch = asr_data.collate_for_generation(samples)
            plans = [asr_data.plan(s) for s in samples]
            with torch.inference_mode():
                generated = model.generate(batch, plans)
            for i, plan, tokens in zip(rows, plans, generated):
                texts[i] = str(plan.decode(tokens, {}).get(column) or "")
        return texts

    return transcribe
