"""The tensors one training or inference step feeds the universal model.

A batch always holds a single task, so every sample shares one layout: the encoder sees an ordered
list of segments (runs of tokens, or one embedded slot such as an image or audio), the decoder sees tokens only. Keeping the layout
explicit, instead of flattening everything into one padded sequence, lets the model route images
through its adaptor and lets padding be masked per segment.
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
    made (e.g. B x 3 x H x W float pixels in [0, 1], B x T x 80 fbank frames)."""
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

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> "Batch":
        return replace(
            self,
            segments=[s.to(device) for s in self.segments],
            decoder_input=self.decoder_input.to(device),
            target=None if self.target is None else self.target.to(device),
            loss_mask=None if self.loss_mask is None else self.loss_mask.to(device),
        )

    def num_target_tokens(self) -> int:
        return 0 if self.loss_mask is None else int(self.loss_mask.sum())
