"""MLP denoiser for 2D points (tiny-diffusion layout) with selectable coordinate embeddings.

Each coordinate and the timestep get a sinusoidal embedding (coordinates scaled by 25, which
lets a small MLP resolve fine structure, Tancik et al. 2020); the three embeddings are
concatenated and fed to a residual MLP. The embedding variants differ in how the coordinate
embedding is modulated per frequency:

- ``sinusoidal``: none (the baseline).
- ``scaled``: a learned modulation per frequency feature, the same at every timestep.
- ``time_mlp``: modulation produced by a small MLP of the timestep embedding.
- ``band_attention``: softmax attention of a timestep query over frequency bands.

Every modulation starts at 1, so all variants start as the baseline.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
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


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ff = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ff(torch.relu(x))


class MLPDenoiser(nn.Module):
    """(x (B, 2), t (B,) training step, optional class (B,)) -> (B, 2) prediction.

    With ``num_classes`` > 0 a class embedding is added; class id ``num_classes`` is the null
    class used for classifier-free guidance.
    """

    def __init__(
        self,
        *,
        embedding: Embedding = "sinusoidal",
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        hidden_layers: int = 3,
        input_scale: float = 25.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.time_embed = SinusoidalEmbedding(embedding_dim)
        self.coord_embed = SinusoidalEmbedding(embedding_dim, scale=input_scale)
        self.modulations = nn.ModuleList(
            [Modulation(embedding, embedding_dim, t_dim=embedding_dim) for _ in range(2)]
        )
        self.input = nn.Linear(3 * embedding_dim, hidden_dim)
        self.class_embed = nn.Embedding(num_classes + 1, hidden_dim) if num_classes else None
        self.blocks = nn.Sequential(*[ResidualBlock(hidden_dim) for _ in range(hidden_layers)])
        self.output = nn.Linear(hidden_dim, 2)

    def coordinate_embeddings(self, x: Tensor, t_emb: Tensor) -> Tensor:
        embs = []
        for i, modulation in enumerate(self.modulations):
            emb = self.coord_embed(x[:, i])  # (B, E)
            scale = modulation(t_emb)
            embs.append(emb if scale is None else emb * scale)
        return torch.cat(embs, dim=-1)  # (B, 2E)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t_emb = self.time_embed(t)  # (B, E)
        h = self.input(torch.cat([self.coordinate_embeddings(x, t_emb), t_emb], dim=-1))
        if self.class_embed is not None:
            if y is None:
                y = torch.full_like(t, self.class_embed.num_embeddings - 1)
            h = h + self.class_embed(y)
        h = self.blocks(h)  # (B, H)
        return self.output(torch.relu(h))

    @torch.no_grad()
    def modulation_table(self, t: Tensor) -> Tensor | None:
        """Modulation per timestep and frequency, averaged over the two coordinates and over
        sin/cos: (len(t), E/2); None for plain sinusoidal."""
        if self.embedding == "sinusoidal":
            return None
        t_emb = self.time_embed(t)
        mods = torch.stack([m(t_emb) for m in self.modulations])  # (2, T, E)
        mods = rearrange(mods, "c t (sc f) -> t (c sc) f", sc=2)
        return mods.mean(dim=1)  # (T, E/2)
