"""The tensors one training or inference step feeds the universal model.

A batch always holds a single task, so every sample shares one layout: the encoder sees an ordered
list of segments (runs of tokens, or one embedded slot such as an image or audio), the decoder sees
tokens (a frame output adds `FrameTargets`: which decoder states predict which frames). Keeping the
layout explicit, instead of flattening everything into one padded sequence, lets the model route
images through its adaptor and lets padding be masked per segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


TOKENS = "tokens"
"""Kind of a run of unified token ids (prompt text, specials, TEXT/BOX/... slots)."""


@dataclass
class EncoderSegment:
    """One encoder-side run: a run of token ids, or one embedded slot of a modality.

    `kind` is `TOKENS` or a modality name ("IMAGE", "AUDIO", ...); the model routes a modality's
    segment through the adaptor registered under that name."""

    kind: str
    tensor: torch.Tensor
    """TOKENS: B x L unified ids padded with the pad id (0); otherwise what the modality's `collate`
    made: e.g. B x 3 x H x W uint8 pixels (IMAGE), B x F x 3 x H x W uint8 frames (VIDEO), B x T x 80
    float32 fbank frames (AUDIO). Pixels stay 8-bit until the adaptor, which converts them on the
    model's device (`ofasys.modalities.image.unit_pixels`): a quarter of float32's bytes through the
    loader's shared memory and host-to-device copies. Only floating tensors take a bf16 engine's
    dtype when a batch is moved (`ofasys.training.trainer`); integer ones keep theirs."""
    mask: torch.Tensor | None = None
    """B x L bool, True where the segment holds a real token or frame; None = every position real."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"a segment kind is 'tokens' or a modality name, got {self.kind!r}")
        if self.kind == TOKENS and self.mask is None:
            raise ValueError("a tokens segment needs its mask")

    def to(self, device: torch.device | str) -> "EncoderSegment":
        return replace(self, tensor=self.tensor.to(device), mask=None if self.mask is None else self.mask.to(device))


@dataclass
class FrameTargets:
    """The frame output of a batch (MOTION, AUDIO with `audio_tgt_fbank`; see `Modality.frame_output`):
    which decoder states predict which frame, and, when training, the frames and the diffusion draws.

    Frame `j` of a sample is predicted by the decoder state at `index[:, j]`: the step whose next-token
    target is that frame's placeholder (so the state has seen the prompt and the frames before it)."""

    modality: str
    """The modality whose output head makes the frames (the model's `output_heads` key)."""
    index: torch.Tensor
    """B x F long: decoder positions whose states predict frame 0.. of each sample (0 where padding)."""
    mask: torch.Tensor
    """B x F bool: True for a real frame."""
    values: torch.Tensor | None = None
    """B x F x D float32 targets, normalised by the train split's statistics (None when generating)."""
    noise: torch.Tensor | None = None
    """B x F x D standard normal draws for a diffusion head's training (None otherwise): drawn by the
    collator from the batch's generator, so a resumed run draws the same ones."""
    level: torch.Tensor | None = None
    """B noise levels in [0, 1) for a diffusion head's training, drawn with `noise`."""
    progress: torch.Tensor | None = None
    """B x F float32: how far through its output each frame is (j / n for frame j of n)."""

    def to(self, device: torch.device | str) -> "FrameTargets":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, index=move(self.index), mask=move(self.mask), values=move(self.values),
                       noise=move(self.noise), level=move(self.level), progress=move(self.progress))


@dataclass
class Batch:
    """A single-task batch. `target`/`loss_mask` are None at inference time."""

    task: str
    keys: list[str]
    segments: list[EncoderSegment]
    decoder_input: torch.Tensor
    """B x T: `<bos>` then the (teacher-forced) output tokens; pad id 0."""
    target: torch.Tensor | None = None
    """B x T next-token targets aligned with `decoder_input`; pad id 0."""
    loss_mask: torch.Tensor | None = None
    """B x T bool: True where `target` carries loss (not forced prompt text, not `no_loss`, not pad)."""
    meta: list[dict] = field(default_factory=list)
    """Per-sample metadata from the shard (original image sizes, references) for decoding outputs."""
    frames: FrameTargets | None = None
    """The frame output's targets (a template generating MOTION or speech), else None."""

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> "Batch":
        return replace(
            self,
            segments=[s.to(device) for s in self.segments],
            decoder_input=self.decoder_input.to(device),
            target=None if self.target is None else self.target.to(device),
            loss_mask=None if self.loss_mask is None else self.loss_mask.to(device),
            frames=None if self.frames is None else self.frames.to(device),
        )

    def num_target_tokens(self) -> int:
        return 0 if self.loss_mask is None else int(self.loss_mask.sum())
