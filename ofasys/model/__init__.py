"""The universal encoder-decoder (DESIGN §6): config, image adaptor, Transformer layers, model."""

from .config import PRESETS, ModelConfig
from .universal import CachedDecoder, UniversalModel

__all__ = ["PRESETS", "CachedDecoder", "ModelConfig", "UniversalModel"]
