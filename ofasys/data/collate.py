"""Samples of one task -> a model `Batch`, following one template of the task's instruction.

Encoder side (`Template.resolved_inputs()`): consecutive token items (prompt text, `<BOS>`/`<EOS>`,
slots of token modalities such as TEXT/BOX/CATEGORY) form one tokens segment; a slot of an embedded
modality (IMAGE, AUDIO, ...) is its own segment, stacked by that modality's `collate`, with
per-sample generators keyed by (seed, epoch, sample key, column) for its augmentation.
Prompt text is tokenized once and cached. `mask_ratio` span masking and `noise_ratio` token noise are
applied here, per epoch, on the materialised ids: with the batch's generator when training, and with a
generator seeded by (seed, sample key, column) at evaluation, so evaluation inputs are reproducible.

Decoder side (`Template.resolved_outputs()`): the full sequence `seq` (starting with `<bos>`, added
if the template has none first) gives decoder_input = seq[:-1] and target = seq[1:]. A target carries
loss when it comes from an output slot without `no_loss`, or is a special token; forced prompt text
never does. Everything is padded with 0 (the pad id) and padding never carries loss.

`ofasys.data.limits` counts the encoder and decoder positions these sequences take, so that
materialisation rejects a sample the model can't take; a change to what is built here changes that
count too (tests/data/test_limits.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ofasys.data.batch import TOKENS, Batch, EncoderSegment, FrameTargets
from ofasys.data.masking import key_rng, span_mask, token_noise
from ofasys.data.plan import DEFAULT_MAX_TEXT_TOKENS, MAX_REPEATS, OutputPlan, special_id
from ofasys.instruction.ast import Group, Instruction, Slot, Special, Template, Text
from ofasys.data.members import REPEAT_LENGTHS, slot_handler, slot_member
from ofasys.modalities import FRAME_STATS, IMAGE_CODE_GRID, NO_ASSETS
from ofasys.vocab import UnifiedVocab


@dataclass(frozen=True)
class Sample:
    """One materialised sample: its key, its json (task, split, row, lengths, meta, refs) and arrays
    keyed "<column>.<modality>" (e.g. "img.image", "cap.text")."""

    key: str
    meta: dict
    arrays: dict[str, np.ndarray]


def array_key(slot: Slot) -> str:
    return slot_member(slot)


def _token_run(slot: Slot) -> bool:
    return slot_handler(slot).token_run


def _pad(rows: Sequence[Sequence[int]], dtype: type = np.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows padded with 0 to the longest row, mask of the real positions). Filled in numpy and
    converted once: a tensor per row was a fifth of a loader worker's time on short-text tasks."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    out = np.zeros((len(rows), width), dtype=dtype)
    for i, r in enumerate(rows):
        if lengths[i]:
            out[i, : lengths[i]] = r
    mask = np.arange(width)[None, :] < lengths[:, None]
    return torch.from_numpy(out), torch.from_numpy(mask)


class _KeyedRngs(Sequence[np.random.Generator]):
    """The per-sample augmentation generators of one embedded slot, each made when first asked for:
    a generator keyed by (seed, epoch, key, column) costs a hash and a seeding (~30 us), and most
    modalities (images, video) draw nothing from it. Made on demand, it is the same generator."""

    def __init__(self, seed: int, epoch: str, keys: Sequence[str], column: str) -> None:
        self._seed, self._epoch, self._keys, self._column = seed, epoch, list(keys), column

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return key_rng(self._seed, "augment", self._epoch, self._keys[i], self._column)


def generation_assets(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a task's manifest (or its entry in an export's config) fixes for generation: the grid of
    the VQ tokenizer its image codes were made with, how many repetitions a repeat group may make, and
    the statistics its frame outputs are normalised by."""
    assets: dict[str, Any] = {}
    codes = manifest.get("assets", {}).get("image_codes")
    if codes:
        assets[IMAGE_CODE_GRID] = int(codes["grid"])
    if manifest.get(FRAME_STATS):  # what a frame output is normalised by, and its longest train sample
        assets[FRAME_STATS] = {k: dict(v) for k, v in manifest[FRAME_STATS].items()}
    if manifest.get("max_repeats") is not None:  # one more than training saw, so a crowded image is not cut short
        assets[MAX_REPEATS] = int(manifest["max_repeats"]) + 1
    return assets


class Collator:
    """Builds batches and output plans for one task's instruction (see module doc)."""

    def __init__(
        self,
        instruction: Instruction,
        vocab: UnifiedVocab,
        task: str,
        *,
        closed_sets: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        default_max_text: int = DEFAULT_MAX_TEXT_TOKENS,
        assets: Mapping[str, Any] = NO_ASSETS,
    ):
        self.instruction = instruction
        self.assets = dict(assets)
        """What the run's assets fix for generation (`IMAGE_CODE_GRID`: the VQ grid)."""
        self.vocab = vocab
        self.task = task
        self.closed_sets = dict(closed_sets or {})
        self.seed = seed
        self.default_max_text = default_max_text
        self._text_cache: dict[str, tuple[int, ...]] = {}
        self._resolved: dict[tuple[int, str], tuple[Template, tuple]] = {}
        self._fixed: dict[int, tuple[Text | Special, np.ndarray, np.ndarray]] = {}
        self._plans: dict[int, OutputPlan] = {}
        for template in instruction.templates:
            for item in template.inputs:
                if isinstance(item, Group):
                    raise NotImplementedError(
                        f"repeat groups on the input side are not supported in collation (at {item.pos} of "
                        f"{template.source!r})"
                    )

    # ----- pieces ---------------------------------------------------------------------------------
    def text_ids(self, text: str) -> tuple[int, ...]:
        """Prompt text ids, tokenized once per distinct text."""
        ids = self._text_cache.get(text)
        if ids is None:
            ids = tuple(self.vocab.encode_text(text)) if text.strip() else ()
            self._text_cache[text] = ids
        return ids

    def resolved(self, template: Template, side: str) -> tuple:
        """`template.resolved_inputs()` ("input") or `resolved_outputs()` ("output"), resolved once per
        template: collation asks for them once per sample."""
        hit = self._resolved.get((id(template), side))
        if hit is None or hit[0] is not template:
            items = template.resolved_inputs() if side == "input" else template.resolved_outputs()
            hit = self._resolved[(id(template), side)] = (template, tuple(items))
        return hit[1]

    def fixed_piece(self, item: Text | Special) -> tuple[np.ndarray, np.ndarray]:
        """(ids, loss flags) of a prompt text (no loss) or a special token (loss): the same for every
        sample, so made once. Callers concatenate them and never write into them."""
        hit = self._fixed.get(id(item))
        if hit is None or hit[0] is not item:
            if isinstance(item, Text):
                ids = np.asarray(self.text_ids(item.text), dtype=np.int64)
                flags = np.zeros(len(ids), bool)
            else:
                ids = np.asarray([special_id(self.vocab, item)], dtype=np.int64)
                flags = np.ones(1, bool)
            ids.flags.writeable = flags.flags.writeable = False
            hit = self._fixed[id(item)] = (item, ids, flags)
        return hit[1], hit[2]

    def _embedded_rngs(self, samples: Sequence[Sample], slot: Slot, rng: np.random.Generator, train: bool,
                       epoch: int | None) -> list[np.random.Generator] | None:
        """Per-sample generators for an embedded slot's augmentation: keyed by (seed, epoch, key,
        column) when the epoch is known, so a sample's augmentation does not depend on its batch;
        drawn from the batch generator otherwise; None at evaluation (no augmentation)."""
        if not train:
            return None
        if epoch is None:
            return [np.random.default_rng(int(rng.integers(2**63))) for _ in samples]
        return _KeyedRngs(self.seed, str(epoch), [s.key for s in samples], slot.column or "")

    def _rng_for(self, sample: Sample, slot: Slot, rng: np.random.Generator, train: bool) -> np.random.Generator:
        return rng if train else key_rng(self.seed, sample.key, slot.column or "", slot.modality)

    def _slot_tokens(self, sample: Sample, slot: Slot, rng: np.random.Generator, train: bool, side: str) -> np.ndarray:
        key = array_key(slot)
        if key not in sample.arrays:
            raise KeyError(f"sample {sample.key} has no array {key!r} (has {sorted(sample.arrays)})")
        ids = np.asarray(sample.arrays[key], dtype=np.int64)
        if side == "input":
            ratio = float(slot.attrs.get("mask_ratio") or 0.0)
            if ratio > 0:
                ids = span_mask(ids, ratio, self._rng_for(sample, slot, rng, train), self.vocab.mask)
            noise = float(slot.attrs.get("noise_ratio") or 0.0)
            if noise > 0 and train:
                ids = token_noise(ids, noise, rng, self.vocab.text_range)
        return ids

    def pick_template(self, rng: np.random.Generator | None) -> int:
        n = len(self.instruction.templates)
        return 0 if n == 1 or rng is None else int(rng.integers(n))

    # ----- encoder --------------------------------------------------------------------------------
    def encoder_segments(
        self, template: Template, samples: Sequence[Sample], rng: np.random.Generator, train: bool,
        epoch: int | None = None,
    ) -> list[EncoderSegment]:
        segments: list[EncoderSegment] = []
        run: list[list[np.ndarray]] | None = None  # per sample, the pieces of the current token run

        def flush() -> None:
            nonlocal run
            if run is not None:
                rows = [np.concatenate(pieces) if pieces else np.zeros(0, np.int64) for pieces in run]
                tokens, mask = _pad(rows)
                segments.append(EncoderSegment(TOKENS, tokens, mask))
                run = None

        for item in self.resolved(template, "input"):
            if isinstance(item, Slot) and not _token_run(item):
                flush()
                key = array_key(item)
                data, mask = slot_handler(item).collate(
                    [s.arrays[key] for s in samples], item.attrs, self._embedded_rngs(samples, item, rng, train, epoch))
                segments.append(EncoderSegment(item.modality, torch.from_numpy(data),
                                               None if mask is None else torch.from_numpy(mask)))
                continue
            if run is None:
                run = [[] for _ in samples]
            if isinstance(item, (Text, Special)):
                ids = self.fixed_piece(item)[0]
                for pieces in run:
                    pieces.append(ids)
            elif isinstance(item, Slot):
                for pieces, sample in zip(run, samples):
                    pieces.append(self._slot_tokens(sample, item, rng, train, "input"))
            else:
                raise NotImplementedError(f"collation of {item!r} is not yet supported")
        flush()
        return segments

    # ----- decoder --------------------------------------------------------------------------------
    def decoder_sequence(
        self, template: Template, sample: Sample, rng: np.random.Generator, train: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, np.ndarray] | None]:
        """(seq, noisy seq for decoder input, loss flag per position of seq, frame output or None).

        A frame output slot (`Modality.frame_output`) is one `<mask>` placeholder per stored frame row,
        each a target with loss (the model learns to go on, `<mask>`, or stop, `<eos>`); the frame
        output is (its first placeholder's position in seq, its stored array)."""
        seq: list[np.ndarray] = []
        noisy: list[np.ndarray] = []
        flags: list[np.ndarray] = []
        frames: tuple[int, np.ndarray] | None = None
        for item in self.resolved(template, "output"):
            if isinstance(item, (Text, Special)):
                ids, flag = self.fixed_piece(item)
                seq.append(ids), noisy.append(ids), flags.append(flag)
            elif isinstance(item, Slot) and _token_run(item):
                ids = self._slot_tokens(sample, item, rng, train, "output")
                noise = float(item.attrs.get("noise_ratio") or 0.0)
                seq.append(ids)
                noisy.append(token_noise(ids, noise, rng, self.vocab.text_range) if train and noise > 0 else ids)
                flags.append(np.full(len(ids), not item.no_loss, bool))
            elif isinstance(item, Group):
                for ids, loss in self.repetitions(item, sample):
                    seq.append(ids), noisy.append(ids), flags.append(np.full(len(ids), loss, bool))
            elif isinstance(item, Slot) and slot_handler(item).frame_output:
                array = sample.arrays[array_key(item)]
                ids = np.full(slot_handler(item).frame_steps(array), self.vocab.mask, np.int64)
                frames = (sum(len(x) for x in seq), array)
                seq.append(ids), noisy.append(ids), flags.append(np.ones(len(ids), bool))
            else:
                raise NotImplementedError(f"collation of output item {item!r} is not yet supported")
        s = np.concatenate(seq) if seq else np.zeros(0, np.int64)
        n = np.concatenate(noisy) if noisy else np.zeros(0, np.int64)
        f = np.concatenate(flags) if flags else np.zeros(0, bool)
        if s.size == 0 or s[0] != self.vocab.bos:
            s = np.concatenate([[self.vocab.bos], s]).astype(np.int64)
            n = np.concatenate([[self.vocab.bos], n]).astype(np.int64)
            f = np.concatenate([[False], f])
            frames = None if frames is None else (frames[0] + 1, frames[1])
        return s, n, f, frames

    def repetitions(self, group: Group, sample: Sample) -> list[tuple[np.ndarray, bool]]:
        """A repeat group's output pieces for one sample, (ids, carries loss), repetition by repetition:
        each slot's element `r` of its stored run (cut by the element lengths in meta), prompt text
        (no loss) and specials (loss) once per repetition. Zero elements: nothing."""
        runs: dict[int, list[np.ndarray]] = {}
        count = None
        for k, item in enumerate(group.items):
            if isinstance(item, Slot):
                ids = np.asarray(sample.arrays[array_key(item)], dtype=np.int64)
                lengths = sample.meta.get("meta", {}).get(item.column, {}).get(REPEAT_LENGTHS, [])
                runs[k] = np.split(ids, np.cumsum(lengths)[:-1]) if lengths else []
                count = len(runs[k])
        pieces: list[tuple[np.ndarray, bool]] = []
        for r in range(count or 0):
            for k, item in enumerate(group.items):
                if isinstance(item, (Text, Special)):
                    pieces.append((self.fixed_piece(item)[0], isinstance(item, Special)))
                else:
                    pieces.append((runs[k][r], True))
        return pieces

    # ----- batches --------------------------------------------------------------------------------
    def collate(
        self, samples: Sequence[Sample], rng: np.random.Generator, train: bool, template: int | None = None,
        epoch: int | None = None,
    ) -> Batch:
        """A training/validation batch with targets and loss mask. `epoch` (the samples' epoch in
        their task's stream) keys the embedded slots' augmentation per sample."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        t = self.instruction.templates[self.pick_template(rng) if template is None else template]
        segments = self.encoder_segments(t, samples, rng, train, epoch)
        inputs, targets, losses, frames = [], [], [], []
        for sample in samples:
            s, n, f, fr = self.decoder_sequence(t, sample, rng, train)
            inputs.append(n[:-1])
            targets.append(s[1:])
            losses.append(f[1:])
            frames.append(fr)
        decoder_input, _ = _pad(inputs)
        target, valid = _pad(targets)
        loss_mask = _pad(losses, bool)[0]
        return Batch(
            task=self.task,
            keys=[s.key for s in samples],
            segments=segments,
            decoder_input=decoder_input,
            target=target,
            loss_mask=loss_mask & valid,
            meta=[s.meta for s in samples],
            frames=self.frame_targets(t, samples, frames, rng, train),
        )

    def frame_stats(self, member: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) the frames of stored array `member` are normalised by: its task's train statistics
        (`FRAME_STATS`), else none (0, 1) for an instruction no task was trained on."""
        stats = dict(self.assets.get(FRAME_STATS) or {}).get(member)
        if not stats:
            return np.zeros(1, np.float32), np.ones(1, np.float32)
        return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)

    def frame_slot(self, template: Template) -> Slot | None:
        """The template's frame output slot (at most one: `plan_members` checks), or None."""
        for item in template.resolved_outputs():
            if isinstance(item, Slot) and slot_handler(item).frame_output:
                return item
        return None

    def frame_targets(self, template: Template, samples: Sequence[Sample],
                      frames: Sequence[tuple[int, np.ndarray] | None], rng: np.random.Generator,
                      train: bool) -> FrameTargets | None:
        """The batch's `FrameTargets`: frame j of a sample whose placeholders start at seq position p is
        predicted by decoder position p - 1 + j; values normalised by `frame_stats`; a diffusion head's
        noise and levels from the batch generator when training, else keyed by sample (reproducible
        validation losses)."""
        slot = self.frame_slot(template)
        if slot is None:
            return None
        handler = slot_handler(slot)
        mean, std = self.frame_stats(array_key(slot))
        longest = max(len(fr[1]) for fr in frames)
        width = frames[0][1].shape[1]
        index = np.zeros((len(samples), longest), np.int64)
        mask = np.zeros((len(samples), longest), bool)
        values = np.zeros((len(samples), longest, width), np.float32)
        progress = np.zeros((len(samples), longest), np.float32)
        for i, (start, array) in enumerate(frames):
            n = len(array)
            index[i, :n] = np.arange(start - 1, start - 1 + n)
            mask[i, :n] = True
            values[i, :n] = (np.asarray(array, np.float32) - mean) / std
            progress[i, :n] = np.arange(n, dtype=np.float32) / n
        noise = level = None
        if handler.diffusion:  # per sample: its level, then noise for its own frames (not the batch's longest)
            noise = np.zeros((len(samples), longest, width), np.float32)
            level = np.zeros(len(samples), np.float32)
            for i, (sample, (_, array)) in enumerate(zip(samples, frames)):
                draw = rng if train else key_rng(self.seed, sample.key, slot.column or "", "diffusion")
                level[i] = draw.random()
                noise[i, : len(array)] = draw.standard_normal((len(array), width))
        return FrameTargets(
            handler.name, torch.from_numpy(index), torch.from_numpy(mask), torch.from_numpy(values),
            None if noise is None else torch.from_numpy(noise), None if level is None else torch.from_numpy(level),
            torch.from_numpy(progress))

    def plan(self, sample: Sample | None = None, template: int = 0) -> OutputPlan:
        """The generation plan of `template` for `sample`. Shared across samples (built once) unless
        the template forces a `no_loss` output slot from the sample's own ids."""
        t = self.instruction.templates[template]
        per_sample = any(side == "output" and slot.no_loss for side, slot in t.slots())
        if not per_sample and template in self._plans:
            return self._plans[template]
        plan = OutputPlan.build(
            self.instruction.templates[template],
            self.vocab,
            self.closed_sets,
            arrays=None if sample is None else sample.arrays,
            default_max_text=self.default_max_text,
            text_cache=self._text_cache,
            assets=self.assets,
        )
        if not per_sample:
            self._plans[template] = plan
        return plan

    def collate_for_generation(self, samples: Sequence[Sample], template: int = 0) -> Batch:
        """Encoder segments as at evaluation, decoder_input = each sample's forced prefix (right-padded)."""
        if not samples:
            raise ValueError("collate_for_generation needs at least one sample")
        t = self.instruction.templates[template]
        rng = np.random.default_rng(self.seed)  # unused at eval: masking is keyed by sample
        segments = self.encoder_segments(t, samples, rng, train=False)
        prefixes = [self.plan(s, template).prefix for s in samples]
        decoder_input, _ = _pad(prefixes)
        return Batch(
            task=self.task,
            keys=[s.key for s in samples],
            segments=segments,
            decoder_input=decoder_input,
            meta=[s.meta for s in samples],
        )
