"""The single source of truth for the universal model's shape.

A frozen dataclass with a docstring under each field (litgpt style): it maps one-to-one onto the
`model:` section of params.yaml, onto flattened MLflow params and onto `config.json` of an exported
model, so there is nothing to keep in sync by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ofasys.strict_fields import from_mapping

IMAGE_STEMS = ("conv", "resnet50", "resnet101", "resnet152")
IMAGE_POSITIONS = ("learned", "sinusoidal")

# OFA's unified vocabulary: 50,265 GPT-2 BPE tokens + 1,000 location bins + 8,192 VQGAN codes.
# The OFA presets use it so that their parameter counts are comparable with the paper's; a real
# run always overrides `vocab_size` with the size of its own `UnifiedVocab`.
OFA_VOCAB_SIZE = 50265 + 1000 + 8192


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of the universal encoder-decoder (see DESIGN §6)."""

    vocab_size: int = 2048
    """Size of the unified vocabulary (specials, text BPE, bins, codes, phones). Set it from
    `UnifiedVocab.size`; the token embedding and the tied output projection have this many rows."""

    d_model: int = 128
    """Width of every token vector in the encoder and decoder."""

    encoder_layers: int = 2
    """Number of encoder layers."""

    decoder_layers: int = 2
    """Number of decoder layers."""

    heads: int = 4
    """Attention heads per layer; must divide `d_model`."""

    ffn_dim: int = 256
    """Hidden width of each feed-forward block (4 x d_model in OFA; 2 x for the tiny CPU model,
    which is what its calibration used: ~1.3M parameters (stem included) with the demo's vocabulary)."""

    dropout: float = 0.0
    """Dropout on embeddings, residual branches and the FFN activation. Off for the tiny CPU model:
    a short run underfits rather than overfits, and CPU dropout (bernoulli sampling) took ~20% of a
    training step there. The OFA presets use OFA's 0.1."""

    attention_dropout: float = 0.0
    """Dropout on attention probabilities (passed to scaled_dot_product_attention)."""

    max_positions: int = 1024
    """Longest encoder sequence (all segments, image tokens included) and longest decoder sequence.
    Positions are learned, so this bounds what the model can ever see."""

    image_stem: str = "conv"
    """Image adaptor: "conv" is a stride-8 3x3-conv stack with BatchNorm (see `conv_stem`; 64 px
    -> 8x8 = 64 tokens, what the CPU demo is calibrated for); "resnet50" / "resnet101" / "resnet152" are OFA's
    torchvision ResNet trunk up to layer3 (stride 16, 1024 channels, untrained)."""

    image_stem_channels: int = 128
    """Output channels of the "conv" stem (its inner layers use 1/4 and 1/2 of it); ignored by
    the ResNet stems, whose width is fixed."""

    image_positions: str = "learned"
    """2-D positions added to image tokens: "learned" (row + column tables) or "sinusoidal"
    (fixed sin/cos of row and column, works for any grid size)."""

    max_image_grid: int = 32
    """Largest image grid side (tokens per row/column) the learned 2-D position tables cover."""

    normformer: bool = False
    """NormFormer extra norms: a LayerNorm after each attention (before the residual add) and one
    inside each FFN after the activation. OFA uses them (the OFA presets turn them on); in the tiny
    CPU model they kept the decoder from ever using cross-attention to image tokens within the
    demo's budget (grounding stayed at the no-image accuracy), so its default is off."""

    embed_norm: bool = False
    """LayerNorm over the summed embeddings (token or image + positions + segment type) before the
    first encoder and decoder layer, as OFA's `layernorm_embedding`. On for the OFA presets; off for
    the tiny CPU model, where it slowed grounding's use of the image by about half."""

    head_scale: bool = False
    """NormFormer head scaling: a learned scalar per attention head applied before the output
    projection."""

    init_std: float = 0.088
    """Std of the normal init of embeddings and linear weights; residual output projections use
    init_std / sqrt(2 x layers) so the residual stream starts near the embeddings' scale. About
    d_model ** -0.5 for the tiny CPU model: at GPT-2's 0.02 its attention logits start so flat that
    cross-attention to image tokens did not leave the uniform regime within the demo's budget. The
    OFA presets use 0.02, as OFA does."""

    pad_id: int = 0
    """Padding id of the unified vocabulary (contracts: ids 0..4 are pad, bos, eos, unk, mask)."""

    bos_id: int = 1
    """Begin-of-sequence id; every decoder input starts with it."""

    eos_id: int = 2
    """End-of-sequence id; generating it finishes a hypothesis."""

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by heads={self.heads}")
        if self.image_stem not in IMAGE_STEMS:
            raise ValueError(f"image_stem={self.image_stem!r}; expected one of {IMAGE_STEMS}")
        if self.image_positions not in IMAGE_POSITIONS:
            raise ValueError(
                f"image_positions={self.image_positions!r}; expected one of {IMAGE_POSITIONS}"
            )
        if self.image_positions == "sinusoidal" and self.d_model % 4:
            raise ValueError("sinusoidal 2-D image positions need d_model divisible by 4")
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "ffn_dim",
                     "max_positions", "max_image_grid", "image_stem_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def image_tokens(self, image_size: int) -> int:
        """Encoder positions the image adaptor makes from a square `image_size` px image.

        Every stride-2 layer of the stems (3x3 convs with padding 1; the ResNet's 7x7 conv1 with
        padding 3 and its 3x3 max-pool) maps a side of n pixels to ceil(n / 2): three of them in the
        "conv" stem (stride 8, 64 px -> 8x8 = 64 tokens), four in the ResNet trunks (stride 16).
        Materialisation counts these against `max_positions`, so it must match the adaptor exactly,
        also for sizes that are not a multiple of the stride."""
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        side = image_size
        for _ in range(3 if self.image_stem == "conv" else 4):
            side = -(-side // 2)
        return side * side

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for config.json and MLflow params)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are an error naming the known ones (no silent typos)."""
        return from_mapping(cls, data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named size (see `PRESETS`) with some fields overridden, e.g. `vocab_size`."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


OFA_STYLE = dict(normformer=True, embed_norm=True, init_std=0.02)
"""What the OFA-size presets share with OFA itself (and the tiny CPU model does not)."""

PRESETS: dict[str, ModelConfig] = {
    # What the CPU demo is calibrated for (SETUP.md "Calibration"): ~1.3M parameters with the
    # demo's ~830-id vocabulary, 64 image tokens from a 64 px image.
    "tiny-cpu": ModelConfig(),
    # OFA's sizes (Wang et al. 2022, table 1): ResNet trunk + Transformer, with OFA's vocabulary
    # these come to roughly 33M / 93M / 180M / 470M / 930M parameters.
    "tiny": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=256, encoder_layers=4, decoder_layers=4, heads=4,
        ffn_dim=1024, image_stem="resnet50", dropout=0.1, **OFA_STYLE,
    ),
    "medium": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=512, encoder_layers=4, decoder_layers=4, heads=8,
        ffn_dim=2048, image_stem="resnet101", dropout=0.1, **OFA_STYLE,
    ),
    "base": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=768, encoder_layers=6, decoder_layers=6, heads=12,
        ffn_dim=3072, image_stem="resnet101", dropout=0.1, **OFA_STYLE,
    ),
    "large": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=1024, encoder_layers=12, decoder_layers=12, heads=16,
        ffn_dim=4096, image_stem="resnet152", dropout=0.1, **OFA_STYLE,
    ),
    "huge": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=1280, encoder_layers=24, decoder_layers=12, heads=16,
        ffn_dim=5120, image_stem="resnet152", dropout=0.1, **OFA_STYLE,
    ),
}
"""Named sizes; `ModelConfig.preset(name, vocab_size=vocab.size)` is the usual way to use one."""
