"""`OFASys.from_pretrained(...).inference(instruction, data=...)`: the Python API over a trained model.

Inputs are materialised in memory by the same code that writes shards (`sample_from_row`), so what the
model sees at inference is exactly what it saw in training: same resize, same BPE, same box bins.
Generation is constrained per output slot (text, 4 bins for a box, a trie for a closed set).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REGISTRY_SCHEME = "models:/"

from ofasys.data.collate import Collator, generation_assets
from ofasys.data.materialise import sample_from_row
from ofasys.instruction import Instruction, parse_instruction
from ofasys.model import ModelConfig, UniversalModel, build_model
from ofasys.model.checkpoint_compat import fresh_modalities, load_model_state, upgrade_state_dict
from ofasys.training.export import IMAGE_CODES_FILE, WEIGHTS_FILE, load_pretrained_config, load_pretrained_state
from ofasys.data.members import output_fields, slot_handler, slot_member
from ofasys.evaluation import encoder_length_fn, length_sorted_batches, scored_tokens
from ofasys.generation.frames import generated_frames
from ofasys.modalities import FRAME_STATS, MODALITIES
from ofasys.vocab import UnifiedVocab


@dataclass(frozen=True)
class DetectedObject:
    """One object of a detection output: its box in the input image's pixels, label and score."""

    box: list[float] | None
    label: str | None
    score: float | None


def detected_objects(objects: Sequence[Mapping[str, Any]] | None) -> list[DetectedObject]:
    """A repeat group's decoded objects as `DetectedObject`s: an object's box is its value of 4
    numbers, its label its text value (the group's columns, whatever they are named)."""
    out = []
    for obj in objects or ():
        box = next((v for k, v in obj.items() if k != "score" and isinstance(v, list) and len(v) == 4), None)
        label = next((v for k, v in obj.items() if isinstance(v, str)), None)
        out.append(DetectedObject(box, label, obj.get("score")))
    return out


@dataclass(frozen=True)
class Prediction:
    """Decoded outputs of one input row, by output column (or `outputN` for unnamed slots)."""

    outputs: dict[str, Any]
    tokens: list[int] = field(default_factory=list)
    modalities: dict[str, str] = field(default_factory=dict)
    """Modality of each output column, so typed accessors know which value is which."""

    images: dict[str, Any] = field(default_factory=dict)
    """Image outputs (VQ codes) rendered to PIL images by the model's VQ decoder, by column."""
    fields: dict[str, str] = field(default_factory=dict)
    """The typed field (`text`, `box`, `image`, ...) of each output column."""
    media: dict[str, Any] = field(default_factory=dict)
    """Frame outputs as what users play or save (`GeneratedMotion`, `GeneratedSpeech`), by column."""

    def _first(self, field: str) -> Any:
        """The first output whose typed field is `field` (in output order)."""
        fields = self.fields or {column: MODALITIES[mod].output_field for column, mod in self.modalities.items()}
        for column, name in fields.items():
            if name == field and column in self.outputs:
                if field == "image":
                    return self.images.get(column, self.outputs[column])
                return self.media.get(column, self.outputs[column])
        return None

    @property
    def text(self) -> str | None:
        """The first text output (TEXT, or a CATEGORY label)."""
        return self._first("text")

    @property
    def box(self) -> list[float] | None:
        """The first BOX output as [x0, y0, x1, y1] in the input image's pixels."""
        return self._first("box")

    @property
    def objects(self) -> list[DetectedObject] | None:
        """The first repeat-group output as objects (box in the input image's pixels, label, score:
        the probability of the object's tokens), in the order generated."""
        found = self._first("objects")
        return None if found is None else detected_objects(found)

    @property
    def image(self):
        """The first image output as a PIL image (its VQ codes decoded), or None when generation was
        cut before the grid was complete; the codes themselves are in `outputs`."""
        return self._first("image")

    @property
    def motion(self):
        """The first MOTION output as a `GeneratedMotion` (`.features` T x 82, `.frames` DeepMimic T x 44,
        `.save("clip.npz")`), or None when nothing was generated."""
        return self._first("motion")

    @property
    def audio(self):
        """The first speech output as a `GeneratedSpeech` (`.waveform` at `.sample_rate`, `.fbank` T x 80,
        `.save("speech.wav")`), or None when nothing was generated."""
        return self._first("audio")

    @property
    def phones(self) -> str | None:
        """The first PHONE output as space-separated phones ("|" between words)."""
        return self._first("phones")


class OFASys:
    """A trained universal model with its vocabulary and the task schemas it was trained on."""

    def __init__(self, model: UniversalModel, vocab: UnifiedVocab, config: Mapping[str, Any],
                 image_codes: Any = None):
        self.model = model.eval()
        self.vocab = vocab
        self.config = dict(config)
        self.image_codes = image_codes
        """The VQ image tokenizer (`ofasys.vq.VQTokenizer`) its image outputs are decoded with, or None."""
        self.tasks: dict[str, Any] = dict(self.config.get("tasks", {}))
        self._collators: dict[str, Collator] = {}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "OFASys":
        """Load an exported dir (`model.safetensors`, `config.json`, `vocab.json`).

        Weights are read with safetensors only: nothing in a checkpoint can execute code. A
        `models:/<name>@<alias>` URI lives in an MLflow store, which the library does not talk to:
        `pipeline.registry.from_registry(uri, tracking_uri=...)` downloads it and calls this.
        """
        if isinstance(path, str) and path.startswith(REGISTRY_SCHEME):
            raise ValueError(f"{path}: a registry URI; load it with pipeline.registry.from_registry({path!r}, "
                             "tracking_uri=...) (the ofasys library does not depend on MLflow)")
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a pretrained dir (no config.json); expected an export of the train stage")
        config = load_pretrained_config(path)
        vocab = UnifiedVocab.load(path / "vocab.json")
        if config.get("vocab_fingerprint"):
            vocab.check_fingerprint(config["vocab_fingerprint"], where=str(path / "config.json"))
        try:  # from_dict also reads an older export's flat image_* keys into adaptors.IMAGE
            model_config = ModelConfig.from_dict(config["model"])
        except ValueError as exc:
            raise ValueError(f"{path / 'config.json'}: model: {exc}") from None
        # Seeded construction leaves the caller's RNG alone; every weight is then loaded.
        model = build_model(model_config, seed=0)
        try:  # an export from before per-modality adaptors is renamed to the current layout
            fresh = load_model_state(model, upgrade_state_dict(load_pretrained_state(path), model_config))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if fresh:  # an adaptor that never saw training would embed its modality as noise
            raise ValueError(f"{path}: {WEIGHTS_FILE} has no weights for the {', '.join(fresh_modalities(fresh))} "
                             "adaptor that config.json lists under model.adaptors; re-export the trained model")
        image_codes = None
        if config.get("image_codes"):  # a task stores images as VQ codes: its tokenizer is beside the weights
            from ofasys.vq import load_vq

            image_codes = load_vq(path / IMAGE_CODES_FILE, expect_fingerprint=config["image_codes"])
        return cls(model.to(device), vocab, config, image_codes)

    def render_images(self, codes: Sequence[Sequence[int] | None]) -> list[Any]:
        """PIL images of generated code grids (None for a grid cut short), decoded in one batch."""
        from PIL import Image as PILImage

        if self.image_codes is None:
            raise ValueError("this model has no VQ image tokenizer (its export has no vq.safetensors), so it "
                             "cannot decode image codes")
        grid = self.image_codes.config.grid
        whole = [i for i, c in enumerate(codes) if c is not None and len(c) == grid * grid]
        out: list[Any] = [None] * len(codes)
        if whole:
            arrays = np.asarray([codes[i] for i in whole], dtype=np.int64).reshape(-1, grid, grid)
            for i, pixels in zip(whole, self.image_codes.decode(arrays)):
                out[i] = PILImage.fromarray(pixels)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _task_for(self, instruction: Instruction) -> Mapping[str, Any]:
        """The trained task with this exact instruction, if any: it supplies image size and closed sets."""
        for info in self.tasks.values():
            if info.get("instruction", "").strip() == instruction.source.strip():
                return info
        return {}

    def _collator(self, instruction: Instruction, closed_sets: Mapping[str, Sequence[str]],
                  task: Mapping[str, Any]) -> Collator:
        key = instruction.source + repr(sorted((k, tuple(v)) for k, v in closed_sets.items()))
        if key not in self._collators:
            assets = generation_assets(task)  # a trained task's largest repeat count, its VQ grid, frame stats
            if not assets.get(FRAME_STATS):  # a new instruction: the statistics of a trained task's same output
                assets.update(self._frame_stats_for(instruction))
            if self.image_codes is not None:
                assets.update(generation_assets({"assets": {"image_codes": {"grid": self.image_codes.config.grid}}}))
            self._collators[key] = Collator(instruction, self.vocab, "inference", closed_sets=dict(closed_sets),
                                            assets=assets)
        return self._collators[key]

    def _frame_stats_for(self, instruction: Instruction) -> dict[str, Any]:
        """For an instruction no task was trained with, the frame statistics (`FRAME_STATS`) of a trained
        task generating the same kind of frames (a motion, speech), filed under this instruction's own
        output: the model's frames are in those units, whatever the prompt says."""
        found: dict[str, Any] = {}
        for side, slot in instruction.templates[0].slots():
            if side != "output" or not slot_handler(slot).frame_output:
                continue
            tag = slot_handler(slot).tag
            for info in self.tasks.values():
                match = next((v for k, v in dict(info.get(FRAME_STATS) or {}).items() if k.endswith(f".{tag}")), None)
                if match:
                    found[slot_member(slot)] = dict(match)
                    break
        return {FRAME_STATS: found} if found else {}

    def frame_stats(self, instruction: Instruction, column: str) -> dict[str, Any]:
        """The `FRAME_STATS` entry of `column`'s frame output under `instruction` (empty when unknown)."""
        for side, slot in instruction.templates[0].slots():
            if side == "output" and slot.column == column:
                stats = dict(generation_assets(self._task_for(instruction)).get(FRAME_STATS) or {})
                stats = stats or dict(self._frame_stats_for(instruction).get(FRAME_STATS) or {})
                return dict(stats.get(slot_member(slot), {}))
        return {}

    def inference(
        self,
        instruction: str | Instruction,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        beam_size: int = 1,
        max_new_tokens: int | None = None,
        batch_size: int = 32,
        image_size: int | None = None,
        closed_sets: Mapping[str, Sequence[str]] | None = None,
    ) -> Prediction | list[Prediction]:
        """Run `instruction` on one row (a dict, returns one Prediction) or a list of rows.

        Rows hold the instruction's input columns: text as str, images as a path / bytes / PIL /
        array. `closed_sets` gives the candidates of `closed_set` outputs; for an instruction the
        model was trained on they default to the training labels.
        """
        ins = parse_instruction(instruction) if isinstance(instruction, str) else instruction
        single = isinstance(data, Mapping)
        rows = [data] if single else list(data)
        if rows:
            columns = set().union(*(r.keys() for r in rows))
            ins.check_columns(columns, sides=("input",))
        task = self._task_for(ins)
        size = image_size or int(task.get("image_size", 64))
        sets = dict(task.get("closed_sets", {}))
        sets.update(closed_sets or {})
        collator = self._collator(ins, sets, task)
        outputs = [(slot.column or f"output{i}", slot) for i, (side, slot) in enumerate(ins.templates[0].slots())
                   if side == "output"]
        modalities = {column: slot.modality for column, slot in outputs}
        fields = output_fields(ins.templates[0])
        image_columns = [column for column, name in fields.items() if name == "image"]
        handlers = {column: slot_handler(slot) for column, slot in outputs if slot_handler(slot).frame_output}
        stats = {column: self.frame_stats(ins, column) for column in handlers}
        length = encoder_length_fn(ins, getattr(self.model, "config", None))
        results: list[Prediction | None] = [None] * len(rows)
        for picked, samples in length_sorted_batches(rows, batch_size, length, lambda i, row: sample_from_row(
                ins, row, self.vocab, image_size=size, key=f"infer-{i:09d}", image_codes=self.image_codes)):
            batch = collator.collate_for_generation(samples).to(self.device)
            plans = [collator.plan(s) for s in samples]
            with torch.inference_mode():
                generated = self.model.generate(batch, plans, beam_size=beam_size, max_new_tokens=max_new_tokens)
                logprobs = scored_tokens(self.model, batch, plans, generated)
                frames = generated_frames(self.model, batch, plans, generated, [s.key for s in samples], collator)
            decoded = [plan.decode(tokens, sample.meta, scores, made)
                       for sample, plan, tokens, scores, made in zip(samples, plans, generated, logprobs, frames)]
            rendered = {column: self.render_images([d.get(column) for d in decoded]) for column in image_columns}
            for i, (row, outs, tokens) in enumerate(zip(picked, decoded, generated)):
                images = {column: rendered[column][i] for column in image_columns}
                media = {column: handlers[column].typed_output(outs[column], stats[column])
                         for column in handlers if outs.get(column) is not None}
                results[row] = Prediction(outs, list(tokens), modalities, images, fields, media)
        return results[0] if single else results  # type: ignore[return-value]
