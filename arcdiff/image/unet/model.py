"""U-Net denoiser for small images (Ho et al. 2020; Nichol & Dhariwal 2021 improvements).

GroupNorm + SiLU residual blocks whose second norm is modulated by the time (and class)
embedding as a FiLM scale-shift (``h * (1 + scale) + shift``), self-attention at the
resolutions listed in ``attention_resolutions``, strided-conv downsampling and nearest +
conv upsampling. With ``num_classes`` > 0 a class embedding is added to the time embedding;
class id ``num_classes`` is the "unconditional" (null) class used for classifier-free guidance.
The last conv of every residual branch and the output conv start at zero, so each block
starts as the identity and the model starts by predicting 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from arcdiff.image.embeddings import SinusoidalEmbedding


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM from the embedding, GN-SiLU-dropout-conv, plus a (1x1) skip."""

    def __init__(
        self, in_ch: int, out_ch: int, *, emb_dim: int, groups: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C, H, W)
        scale, shift = rearrange(self.film(F.silu(emb)), "b (two c) -> two b c 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual."""

    def __init__(self, channels: int, *, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        q, k, v = rearrange(
            self.qkv(self.norm(x)), "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads
        )  # each (B, heads, H*W, D)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w))


class Level(nn.Module):
    """The residual blocks of one resolution, each followed by attention when it has one.

    Going down, every block output is pushed onto ``skips``; going up, one skip is popped and
    concatenated (on channels) before every block.
    """

    def __init__(self, blocks: list[ResBlock], attention: list[SelfAttention], *, up: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.ModuleList(attention)
        self.up = up

    def forward(self, h: Tensor, emb: Tensor, skips: list[Tensor]) -> Tensor:
        for i, block in enumerate(self.blocks):
            if self.up:
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = block(h, emb)
            if self.attention:
                h = self.attention[i](h)
            if not self.up:
                skips.append(h)
        return h


class UNet(nn.Module):
    """(x (B, C, H, W), t (B,) training step, y (B,) class or None) -> (B, C, H, W).

    ``y = None`` on a class-conditional model means the null class (unconditional).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 16,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (8,),
        num_heads: int = 4,
        groups: int = 8,
        dropout: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by the downsampling")
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(base_channels),
            nn.Linear(base_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        # one extra row: the null class of classifier-free guidance (Ho & Salimans 2022)
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def res_block(in_ch: int, out_ch: int) -> ResBlock:
            return ResBlock(in_ch, out_ch, emb_dim=emb_dim, groups=groups, dropout=dropout)

        def attention(ch: int, res: int, n: int) -> list[SelfAttention]:
            if res not in attention_resolutions:
                return []
            return [SelfAttention(ch, heads=num_heads, groups=groups) for _ in range(n)]

        self.input = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, image_size
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res_block(ch, width))
                ch = width
                skip_channels.append(ch)
            self.down.append(Level(blocks, attention(ch, res, num_res_blocks), up=False))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                res //= 2
        self.mid = nn.ModuleList([res_block(ch, ch), res_block(ch, ch)])
        self.mid_attention = SelfAttention(ch, heads=num_heads, groups=groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(ch + skip_channels.pop(), width))
                ch = width
            self.up.append(Level(blocks, attention(ch, res, num_res_blocks + 1), up=True))
            if i > 0:
                self.upsample.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(ch, ch, 3, padding=1),
                    )
                )
                res *= 2
        self.out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1))
        )

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """Time embedding plus class embedding: (B, E)."""
        emb = self.time_embed(t)
        if self.class_embed is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)
            emb = emb + self.class_embed(y)
        return emb

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(t, y)
        h = self.input(x)  # (B, C0, H, W)
        skips = [h]
        for i, level in enumerate(self.down):
            h = level(h, emb, skips)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, C, H/2, W/2)
                skips.append(h)
        h = self.mid_attention(self.mid[0](h, emb))
        h = self.mid[1](h, emb)
        for i, level in enumerate(self.up):
            h = level(h, emb, skips)
            if i < len(self.upsample):
                h = self.upsample[i](h)  # (B, C, 2H, 2W)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
