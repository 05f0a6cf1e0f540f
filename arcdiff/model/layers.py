"""Building blocks of the denoiser: attention, 2D rotary positions, MLP, pre-norm block,
noise-level embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

Rotary = Tensor  # (N, D/H/2) complex unit numbers: each token's turn of each rotation pair


def grid_rotary(rows: Tensor, cols: Tensor, head_dim: int, *, base: float = 100.0) -> Rotary:
    """2D rotary positions (RoFormer, Su et al. 2021, with the pairs split over two axes).

    rows, cols (N,) float cell coordinates -> (N, head_dim / 2) complex e^(i angle). The head
    dimension is cut into head_dim / 2 rotation pairs (2j, 2j + 1); the first half of the
    pairs turns with the row, the second half with the column, each at frequencies
    base^(-j / (head_dim / 4)). Angles all zero (the size token is given rows = cols = 0)
    leave a vector as it is. ``base`` 100 suits coordinates 0-29.
    """
    if head_dim % 4:
        raise ValueError(
            f"2D rotary positions need a head dimension divisible by 4, got {head_dim}"
        )
    quarter = head_dim // 4
    inv_freq = base ** (-torch.arange(quarter, dtype=torch.float32, device=rows.device) / quarter)
    angles = torch.cat([rows[:, None] * inv_freq, cols[:, None] * inv_freq], dim=-1)  # (N, D/2)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, rotary: Tensor) -> Tensor:
    """Rotate the pairs (2j, 2j + 1) of the last axis of ``x`` (..., D) by ``rotary``
    (broadcast against (..., D/2)) as complex products; computed in float32."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., D/2)
    return torch.view_as_real(pairs * rotary).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention over the whole sequence through scaled_dot_product_attention,
    with queries and keys rotated by 2D positions when ``rotary`` is given."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        qkv = self.qkv(x)  # (B, N, 3D)
        if rotary is None:
            q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.n_heads)
        else:  # queries and keys turned together, in place of their (B, N, 2D) slice's pairs
            d = qkv.shape[-1] // 3
            qk = apply_rotary(
                qkv[..., : 2 * d].unflatten(-1, (2 * self.n_heads, -1)), rotary[:, None]
            )
            q, k = rearrange(qk, "b n (two h) d -> two b h n d", two=2)
            v = rearrange(qkv[..., 2 * d :], "b n (h d) -> b h n d", h=self.n_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, N, D/H)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class MLP(nn.Module):
    def __init__(self, d_model: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.fc1 = nn.Linear(d_model, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block (as GPT-2 / nanoGPT)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), rotary)
        return x + self.mlp(self.norm2(x))


class NoiseLevelEmbedding(nn.Module):
    """logSNR -> sinusoidal features -> MLP (the noise level, not the step index, is the input).

    Sinusoids as in Vaswani et al. 2017 / DDPM; logSNR in [-20, 20] is scaled to about [-1, 1]
    before the frequencies are applied.
    """

    def __init__(self, d_model: int, num_freqs: int = 64, max_period: float = 1000.0):
        super().__init__()
        freqs = torch.exp(-math.log(max_period) * torch.arange(num_freqs) / num_freqs)
        self.register_buffer("freqs", freqs * 1000.0 / 20.0, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_freqs, d_model), nn.SiLU(), nn.Linear(d_model, d_model)
        )

    def forward(self, logsnr: Tensor) -> Tensor:
        angles = logsnr.float()[:, None] * self.freqs[None, :]  # (B, F)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, D)
