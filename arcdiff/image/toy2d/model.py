"""MLP denoiser for 2D points (tiny-diffusion layout) with selectable coordinate embeddings.

Each coordinate and the timestep get a sinusoidal embedding (coordinates scaled by 25); the
three embeddings are concatenated and fed to a residual MLP. The coordinate embeddings are
modulated per frequency as the chosen variant of arcdiff/image/embeddings.py says.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from arcdiff.image.embeddings import Embedding, Modulation, SinusoidalEmbedding


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
