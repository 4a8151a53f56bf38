"""A small VQ image tokenizer: RGB images <-> a grid of discrete codes, trained on the tasks' own images.

Text-to-image and image infilling generate an image as `grid * grid` code tokens in the unified
vocabulary's code block; this module is what turns pixels into those codes at materialisation and
codes back into pixels after generation. OFASys downloads a pretrained VQGAN from a hub; here the
`vq` stage trains this one from local images (an air-gapped cluster has no hub), and a user's own
checkpoint in the same format may replace it.

The model is a VQ-VAE: a strided conv encoder (image_size / grid must be a power of two), a codebook
updated by exponential moving averages (van den Oord et al., 2017, appendix; stabler than a codebook
loss at this size), codes that fall out of use restarted on encoder outputs, and a transposed-conv
decoder. Training is seeded end to end, so the same images and config give the same bytes.

The file is safetensors (no pickle) with the config and a fingerprint in its metadata; the
fingerprint hashes the config and every tensor, is checked on load, and is what manifests and
checkpoints record so that codes are never decoded by a different codebook than made them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ofasys.vq_config import VQ_FORMAT, VQConfig, VQError

__all__ = ["VQ_FORMAT", "VQConfig", "VQError", "VQModel", "VQTokenizer", "load_vq", "save_vq", "train_vq"]


class Codebook(nn.Module):
    """Nearest-code quantiser with an EMA-updated codebook (buffers, not parameters)."""

    def __init__(self, size: int, dim: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code index of each row of `z` (N x dim)."""
        dist = (z.pow(2).sum(1, keepdim=True) - 2 * z @ self.embed.t() + self.embed.pow(2).sum(1)[None])
        return dist.argmin(1)

    @torch.no_grad()
    def update(self, z: torch.Tensor, codes: torch.Tensor, generator: torch.Generator) -> int:
        """One EMA step toward the mean of the vectors assigned to each code; codes that fell out of
        use are restarted on random vectors of this batch. Returns how many were restarted."""
        onehot = F.one_hot(codes, self.embed.shape[0]).type(z.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.embed.shape[0] * 1e-5) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        dead = torch.nonzero(self.cluster_size < 1e-2).flatten()
        if len(dead):
            pick = torch.randint(0, z.shape[0], (len(dead),), generator=generator)
            self.embed[dead] = z[pick]
            self.embed_sum[dead] = z[pick]
            self.cluster_size[dead] = 1.0
        return len(dead)


class VQModel(nn.Module):
    """Encoder, codebook and decoder; pixels are floats in [-1, 1], NCHW."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        down: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1)]
        for _ in range(config.downsamplings):
            down += [nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1)]
        down += [nn.ReLU(), nn.Conv2d(c, config.code_dim, 1)]
        self.encoder = nn.Sequential(*down)
        self.codebook = Codebook(config.codebook_size, config.code_dim, config.ema_decay)
        up: list[nn.Module] = [nn.Conv2d(config.code_dim, c, 3, padding=1)]
        for _ in range(config.downsamplings):
            up += [nn.ReLU(), nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)]
        up += [nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def encode_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """N x H x W x dim encoder outputs."""
        return self.encoder(x).permute(0, 2, 3, 1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode_vectors(x)
        return self.codebook.nearest(z.reshape(-1, z.shape[-1])).view(z.shape[:3])

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        q = self.codebook.embed[codes]  # N x g x g x dim
        return self.decoder(q.permute(0, 3, 1, 2))


def _to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class VQTokenizer:
    """A trained VQ model with its config: `encode` images to codes, `decode` codes to images."""

    def __init__(self, model: VQModel) -> None:
        self.model = model.eval()
        self.config = model.config

    def _check_images(self, images: np.ndarray) -> None:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise VQError(f"expected uint8 images of shape N x {size} x {size} x 3, got {images.dtype} "
                          f"{tuple(images.shape)}; resize to the VQ model's image_size first")

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """N x H x W x 3 uint8 -> N x grid x grid int16 codes."""
        self._check_images(images)
        out = [self.model.codes(_to_float(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return torch.cat(out).to(torch.int16).numpy() if out else np.zeros((0, self.config.grid, self.config.grid),
                                                                             np.int16)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """N x grid x grid codes -> N x H x W x 3 uint8 images."""
        g, k = self.config.grid, self.config.codebook_size
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[1:] != (g, g):
            raise VQError(f"expected codes of shape N x {g} x {g}, got {tuple(codes.shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= k):
            raise VQError(f"codes must be in [0, {k}), got {int(codes.min())}..{int(codes.max())}")
        return _to_uint8(self.model.decode_codes(torch.from_numpy(codes.astype(np.int64))))

    def reconstruction_error(self, images: np.ndarray) -> float:
        """Mean absolute pixel error (0-255) of images after encode and decode."""
        rebuilt = self.decode(self.encode(images))
        return float(np.abs(rebuilt.astype(np.float64) - images.astype(np.float64)).mean())

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sorted(self.model.state_dict().items())
                if k not in ("codebook.cluster_size", "codebook.embed_sum")}

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.config, self.state())


def _fingerprint(config: VQConfig, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps({"format": VQ_FORMAT, "config": asdict(config)}, sort_keys=True).encode())
    for name in sorted(tensors):
        h.update(name.encode() + b"\0" + tensors[name].numpy().tobytes())
    return h.hexdigest()


def train_vq(images: np.ndarray, config: VQConfig,
             progress: Callable[[int, float], None] | None = None) -> VQTokenizer:
    """Train on N x H x W x 3 uint8 images (already at `config.image_size`), seeded by `config.seed`.

    `progress(step, loss)` is called every 100 updates and after the last.
    """
    if len(images) == 0:
        raise VQError("no images to train the VQ tokenizer on")
    torch.manual_seed(config.seed)
    model = VQModel(config)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    tokenizer = VQTokenizer(model)
    tokenizer._check_images(images)
    data = _to_float(images)
    with torch.no_grad():  # start the codebook on encoder outputs, so no code starts unreachable
        z = model.encode_vectors(data[rng.integers(0, len(data), config.batch_size * 4)]).reshape(-1, config.code_dim)
        pick = torch.randint(0, z.shape[0], (config.codebook_size,), generator=generator)
        model.codebook.embed.copy_(z[pick])
        model.codebook.embed_sum.copy_(z[pick])
        model.codebook.cluster_size.fill_(1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for step in range(1, config.steps + 1):
        x = data[rng.integers(0, len(data), config.batch_size)]
        z = model.encode_vectors(x)
        flat = z.reshape(-1, config.code_dim)
        codes = model.codebook.nearest(flat.detach())
        q = model.codebook.embed[codes].view_as(z)
        q_st = z + (q - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        rebuilt = model.decoder(q_st.permute(0, 3, 1, 2))
        loss = F.mse_loss(rebuilt, x) + config.commitment * F.mse_loss(z, q.detach())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.codebook.update(flat.detach(), codes, generator)
        if progress is not None and (step % 100 == 0 or step == config.steps):
            progress(step, float(loss.detach()))
    model.eval()
    return tokenizer


def save_vq(tokenizer: VQTokenizer, path: str | os.PathLike) -> str:
    """Write the tokenizer to `path` atomically; returns its fingerprint."""
    from ofasys.safetensors_bytes import canonical_safetensors

    path = Path(path)
    tensors = tokenizer.state()
    fingerprint = _fingerprint(tokenizer.config, tensors)
    meta = {"format": str(VQ_FORMAT), "config": json.dumps(asdict(tokenizer.config), sort_keys=True),
            "fingerprint": fingerprint}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(canonical_safetensors(tensors, meta))
    tmp.replace(path)
    return fingerprint


def load_vq(path: str | os.PathLike, *, expect_fingerprint: str | None = None) -> VQTokenizer:
    """Read a VQ file written by `save_vq` (never unpickles), verifying its fingerprint, and
    `expect_fingerprint` when given (e.g. the one a manifest recorded)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VQError(f"{path}: no VQ tokenizer there; run `dvc repro vq` to train one, or point "
                      f"assets.vq.path at a VQ file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise VQError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != str(VQ_FORMAT) or "config" not in meta:
        raise VQError(f"{path}: not a VQ tokenizer file of format {VQ_FORMAT} (metadata: {sorted(meta)})")
    try:
        config = VQConfig(**json.loads(meta["config"]))
    except (TypeError, ValueError) as err:
        raise VQError(f"{path}: its config is invalid: {err}") from None
    found = _fingerprint(config, tensors)
    if found != meta.get("fingerprint"):
        raise VQError(f"{path}: its tensors do not match the fingerprint it records (damaged or edited); "
                      f"retrain with `dvc repro vq`")
    if expect_fingerprint is not None and found != expect_fingerprint:
        raise VQError(f"{path}: VQ fingerprint {found[:12]} differs from the {expect_fingerprint[:12]} the data was "
                      f"made with; re-materialise the tasks that use image codes")
    model = VQModel(config)
    missing = set(model.state_dict()) - set(tensors) - {"codebook.cluster_size", "codebook.embed_sum"}
    if missing:
        raise VQError(f"{path}: missing tensors {sorted(missing)}")
    model.load_state_dict(tensors, strict=False)
    return VQTokenizer(model)
