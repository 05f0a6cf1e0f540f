"""Time and coordinate embeddings shared by the image track's denoisers.

``SinusoidalEmbedding`` is the transformer's sinusoid (Vaswani et al. 2017) on a scalar (a
timestep, or a coordinate scaled up so a small MLP resolves fine structure, Tancik et al. 2020);
the U-Net and the toy MLP both embed their timestep with it. ``Modulation`` is the adaptive part
of the toy suite's embedding variants: a per-frequency multiplier of a coordinate embedding,

- ``sinusoidal``: none (the baseline);
- ``scaled``: learned per frequency feature, the same at every timestep;
- ``time_mlp``: produced by a small MLP of the timestep embedding;
- ``band_attention``: softmax attention of a timestep query over frequency bands.

Every modulation starts at 1, so all variants start as the baseline.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Embedding = Literal["sinusoidal", "scaled", "time_mlp", "band_attention"]
EMBEDDINGS: tuple[str, ...] = ("sinusoidal", "scaled", "time_mlp", "band_attention")


class SinusoidalEmbedding(nn.Module):
    """[sin(scale * x * f_i), cos(scale * x * f_i)] with f_i = 10000^(-i / (dim/2 - 1))."""

    def __init__(self, dim: int, *, scale: float = 1.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        self.register_buffer("freqs", freqs * scale, persistent=False)  # (dim/2,)

    def forward(self, x: Tensor) -> Tensor:
        angles = x.float()[:, None] * self.freqs[None]  # (B, dim/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


class Modulation(nn.Module):
    """Per-feature multiplier of a coordinate embedding, shape (B, dim) or (dim,), init 1."""

    def __init__(self, kind: Embedding, dim: int, *, t_dim: int, bands: int = 8) -> None:
        super().__init__()
        self.kind = kind
        self.dim = dim
        if kind == "scaled":
            self.weight = nn.Parameter(torch.ones(dim))
        elif kind == "time_mlp":
            self.net = nn.Sequential(nn.Linear(t_dim, 64), nn.SiLU(), nn.Linear(64, dim))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        elif kind == "band_attention":
            if (dim // 2) % bands:
                raise ValueError(f"{dim // 2} frequencies do not split into {bands} bands")
            self.bands = bands
            self.query = nn.Linear(t_dim, 32)
            nn.init.zeros_(self.query.weight)
            nn.init.zeros_(self.query.bias)
            self.keys = nn.Parameter(torch.randn(bands, 32) / math.sqrt(32))
        elif kind != "sinusoidal":
            raise ValueError(f"unknown embedding {kind!r}; expected one of {', '.join(EMBEDDINGS)}")

    def forward(self, t_emb: Tensor) -> Tensor | None:
        """Multiplier for the (B, dim) coordinate embedding, or None for plain sinusoidal."""
        if self.kind == "sinusoidal":
            return None
        if self.kind == "scaled":
            return self.weight.expand(t_emb.shape[0], -1)  # (B, dim)
        if self.kind == "time_mlp":
            return 2 * torch.sigmoid(self.net(t_emb))  # (B, dim), in (0, 2)
        scores = self.query(t_emb) @ self.keys.T / math.sqrt(self.keys.shape[1])  # (B, bands)
        weights = self.bands * scores.softmax(dim=-1)  # mean 1 over bands
        per_freq = weights.repeat_interleave(self.dim // 2 // self.bands, dim=-1)  # (B, dim/2)
        return torch.cat([per_freq, per_freq], dim=-1)  # sin and cos share a frequency
