"""The single source of truth for the universal model's shape.

A frozen dataclass with a docstring under each field (litgpt style): it maps one-to-one onto the
`model:` section of params.yaml, onto flattened MLflow params and onto `config.json` of an exported
model, so there is nothing to keep in sync by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ofasys.strict_fields import from_mapping


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

    adaptors: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: default_adaptors())
    """Modality name -> settings of that modality's adaptor (its own dataclass, e.g.
    `ImageAdaptorConfig`; `{}` = its defaults). The model builds one adaptor per entry, keyed by the
    name, so adding a modality adds an entry and leaves every existing weight as it was. The train
    stage adds an entry for every embedded modality its tasks use."""
    output_heads: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Modality name -> settings of that modality's output head (its own dataclass, e.g.
    `MotionHeadConfig`), for modalities generated as continuous frames (`Modality.frame_output`:
    MOTION, AUDIO). Like `adaptors`, one module per entry, keyed by the name; the train stage adds an
    entry for every frame output its tasks generate."""
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
        adaptors = {}
        for name, raw in dict(self.adaptors).items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"adaptors.{name}: must be a mapping of that adaptor's settings, got {raw!r}")
            adaptors[name] = dict(raw)
            self.adaptor(name)  # validates the name and the settings
        object.__setattr__(self, "adaptors", adaptors)
        heads = {}
        for name, raw in dict(self.output_heads).items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"output_heads.{name}: must be a mapping of that head's settings, got {raw!r}")
            heads[name] = dict(raw)
            self.output_head(name)
        object.__setattr__(self, "output_heads", heads)
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "ffn_dim",
                     "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def adaptor(self, modality: str) -> Any:
        """The typed adaptor settings of `modality` (its `adaptor_config` dataclass); ValueError when
        the modality has no adaptor or the settings are wrong, naming the key."""
        from ofasys.modalities import MODALITIES
        from ofasys.strict_fields import FieldTypeError

        m = MODALITIES.get(modality)
        if m is None or m.adaptor_config is None:
            known = [n for n, mod in MODALITIES.items() if mod.adaptor_config is not None]
            raise ValueError(f"adaptors.{modality}: no such adaptor; modalities with an adaptor: {known}")
        try:
            return from_mapping(m.adaptor_config, dict(self.adaptors.get(modality, {})))
        except (TypeError, ValueError, FieldTypeError) as exc:
            raise ValueError(f"adaptors.{modality}: {exc}") from None

    def output_head(self, modality: str) -> Any:
        """The typed output-head settings of `modality` (its `head_config` dataclass); ValueError when
        the modality has no output head or the settings are wrong, naming the key."""
        from ofasys.modalities import MODALITIES
        from ofasys.strict_fields import FieldTypeError

        m = MODALITIES.get(modality)
        if m is None or m.head_config is None:
            known = [n for n, mod in MODALITIES.items() if mod.head_config is not None]
            raise ValueError(f"output_heads.{modality}: no such output head; modalities with one: {known}")
        try:
            return from_mapping(m.head_config, dict(self.output_heads.get(modality, {})))
        except (TypeError, ValueError, FieldTypeError) as exc:
            raise ValueError(f"output_heads.{modality}: {exc}") from None

    def with_output_heads(self, modalities: Iterable[str]) -> "ModelConfig":
        """This config with a default output-head entry added for each of `modalities` it lacks."""
        heads = {name: dict(raw) for name, raw in self.output_heads.items()}
        for name in modalities:
            heads.setdefault(name, {})
        return replace(self, output_heads=heads)

    def with_adaptors(self, modalities: Iterable[str]) -> "ModelConfig":
        """This config with a default adaptor entry added for each of `modalities` it lacks."""
        adaptors = {name: dict(raw) for name, raw in self.adaptors.items()}
        for name in modalities:
            adaptors.setdefault(name, {})
        return replace(self, adaptors=adaptors)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for config.json and MLflow params)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are an error naming the known ones (no silent typos).

        The image adaptor's settings used to be top-level keys (`image_stem`, `image_stem_channels`,
        `image_positions`, `max_image_grid`); a config written that way (an older export's
        config.json) is read into `adaptors.IMAGE`."""
        return from_mapping(cls, upgrade_legacy_keys(data))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named size (see `PRESETS`) with some fields overridden, e.g. `vocab_size`."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


def default_adaptors() -> dict[str, dict[str, Any]]:
    """The adaptors a config has when it names none: those of the modalities that declare themselves
    in every model (`Modality.default_adaptor`; IMAGE), each with its default settings."""
    from ofasys.modalities import MODALITIES

    return {name: {} for name, m in MODALITIES.items() if m.default_adaptor}


def upgrade_legacy_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with older configs' top-level adaptor keys (e.g. `image_stem`, declared by the modality as
    `legacy_model_keys`) moved into `adaptors.<NAME>`."""
    from ofasys.modalities import MODALITIES

    data = dict(data)
    for name, modality in MODALITIES.items():
        legacy = {new: data.pop(old) for old, new in modality.legacy_model_keys.items() if old in data}
        if legacy:
            adaptors = {n: dict(raw) for n, raw in dict(data.get("adaptors") or default_adaptors()).items()}
            adaptors[name] = {**legacy, **adaptors.get(name, {})}
            data["adaptors"] = adaptors
    return data


def _image(stem: str) -> dict[str, dict[str, Any]]:
    """The OFA presets' image adaptor: a ResNet stem of the given depth."""
    from ofasys.modalities.image import Image  # the modality owns its name

    return {Image.name: {"stem": stem}}


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
        ffn_dim=1024, adaptors=_image("resnet50"), dropout=0.1, **OFA_STYLE,
    ),
    "medium": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=512, encoder_layers=4, decoder_layers=4, heads=8,
        ffn_dim=2048, adaptors=_image("resnet101"), dropout=0.1, **OFA_STYLE,
    ),
    "base": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=768, encoder_layers=6, decoder_layers=6, heads=12,
        ffn_dim=3072, adaptors=_image("resnet101"), dropout=0.1, **OFA_STYLE,
    ),
    "large": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=1024, encoder_layers=12, decoder_layers=12, heads=16,
        ffn_dim=4096, adaptors=_image("resnet152"), dropout=0.1, **OFA_STYLE,
    ),
    "huge": ModelConfig(
        vocab_size=OFA_VOCAB_SIZE, d_model=1280, encoder_layers=24, decoder_layers=12, heads=16,
        ffn_dim=5120, adaptors=_image("resnet152"), dropout=0.1, **OFA_STYLE,
    ),
}
"""Named sizes; `ModelConfig.preset(name, vocab_size=vocab.size)` is the usual way to use one."""
