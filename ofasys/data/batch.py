"""The tensors one training or inference step feeds the universal model.

A batch always holds a single task, so every sample shares one layout: the encoder sees an ordered
list of segments (runs of tokens, or an image), the decoder sees tokens only. Keeping the layout
explicit, instead of flattening everything into one padded sequence, lets the model route images
through its adaptor and lets padding be masked per segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class EncoderSegment:
    """One encoder-side run: `kind="tokens"` carries `tokens`+`mask`, `kind="image"` carries `images`."""

    kind: str
    tokens: torch.Tensor | None = None
    """B x L unified token ids, padded with the vocabulary's pad id (0)."""
    mask: torch.Tensor | None = None
    """B x L bool, True where `tokens` holds a real token."""
    images: torch.Tensor | None = None
    """B x 3 x H x W float in [0, 1]; the model's adaptor normalises."""

    def __post_init__(self) -> None:
        if self.kind == "tokens":
            if self.tokens is None or self.mask is None:
                raise ValueError("a tokens segment needs tokens and mask")
        elif self.kind == "image":
            if self.images is None:
                raise ValueError("an image segment needs images")
        else:
            raise ValueError(f"unknown segment kind {self.kind!r}; expected 'tokens' or 'image'")

    def to(self, device: torch.device | str) -> "EncoderSegment":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, tokens=move(self.tokens), mask=move(self.mask), images=move(self.images))


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
