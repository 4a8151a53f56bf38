"""safetensors bytes that are the same for the same tensors and metadata, run after run.

The library writes `__metadata__` from a Rust HashMap, whose key order changes from run to run, so
two saves of identical tensors differ; everything the project fingerprints or promises
byte-identical (exported models, the VQ tokenizer) is written through `canonical_safetensors`.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import save


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the header re-emitted with sorted keys (data offsets are relative to
    the end of the header, so they stay valid), padded to 8 bytes as the format requires."""
    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + raw[8 + n :]
