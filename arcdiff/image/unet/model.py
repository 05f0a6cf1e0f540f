"""U-Net denoiser for small images (Ho et al. 2020; Nichol & Dhariwal 2021 improvements).

GroupNorm + SiLU residual blocks whose second norm is modulated by the time (and class)
embedding as a FiLM scale-shift (``h * (1 + scale) + shift``), self-attention at the
resolutions listed in ``attention_resolutions``, strided-conv downsampling and nearest +
conv upsampling. With ``num_classes`` > 0 a class embedding is added to the time embedding;
class id ``num_classes`` is the "unconditional" (null) class used for classifier-free guidance.
With a context table (text conditioning: prompt token embeddings, arcdiff/image/unet/text.py)
the class embedding is replaced by cross-attention at ``cross_attention_resolutions`` and in the
middle: queries from the image features, keys and values from the prompt of each class, its last
row the empty prompt (Rombach et al. 2022). The blocks exist exactly when a table is given, and
``text_conditional=True`` without one refuses to build.
The last conv of every residual branch and the output conv start at zero, so each block
starts as the identity and the model starts by predicting 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from arcdiff.errors import ConfigError
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


class CrossAttention(nn.Module):
    """Image positions attend to the tokens of a context (a prompt), residual.

    Queries from the normalised feature map, keys and values from the layer-normalised context;
    padded context tokens are masked out. The output projection starts at zero.
    """

    def __init__(self, channels: int, context_dim: int, *, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.context_norm = nn.LayerNorm(context_dim)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        _, _, h, w = x.shape
        q = rearrange(self.q(self.norm(x)), "b (n d) h w -> b n (h w) d", n=self.heads)
        k, v = rearrange(
            self.kv(self.context_norm(context)), "b l (two n d) -> two b n l d", two=2, n=self.heads
        )  # each (B, heads, L, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return x + self.proj(rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w))


Context = tuple[Tensor, Tensor]  # (tokens (B, L, D), mask (B, L)) of each image's prompt


class Level(nn.Module):
    """The residual blocks of one resolution, each followed by self- and cross-attention when
    the level has them.

    Going down, every block output is pushed onto ``skips``; going up, one skip is popped and
    concatenated (on channels) before every block.
    """

    def __init__(
        self,
        blocks: list[ResBlock],
        attention: list[SelfAttention],
        *,
        up: bool,
        cross: list[CrossAttention] | None = None,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.ModuleList(attention)
        if cross:  # no attribute otherwise: label-conditioned checkpoints keep their keys
            self.cross = nn.ModuleList(cross)
        self.up = up

    def forward(
        self, h: Tensor, emb: Tensor, skips: list[Tensor], context: Context | None = None
    ) -> Tensor:
        for i, block in enumerate(self.blocks):
            if self.up:
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = block(h, emb)
            if self.attention:
                h = self.attention[i](h)
            if context is not None and hasattr(self, "cross"):
                h = self.cross[i](h, *context)
            if not self.up:
                skips.append(h)
        return h


def _check_context(
    text_conditional: bool,
    context_tokens: Tensor | None,
    context_mask: Tensor | None,
    num_classes: int,
) -> None:
    """A text-conditional U-Net has a context table of one prompt per class plus the empty one."""
    if text_conditional and context_tokens is None:
        raise ConfigError(
            "model.text_conditional is true but no context table was given: the U-Net "
            "would have no cross-attention and ignore the prompts; encode the prompts "
            "(arcdiff/image/unet/text.py) and pass the table when building the model"
        )
    if context_tokens is not None:
        if not text_conditional or context_mask is None:
            raise ValueError("a context table needs text_conditional=True and its mask")
        if len(context_tokens) != num_classes + 1:
            raise ValueError(
                f"context table has {len(context_tokens)} prompts; {num_classes} classes "
                "need one each plus the empty prompt"
            )


@dataclass(frozen=True)
class _Blocks:
    """Builds the U-Net's blocks at a level: residual, self- and cross-attention."""

    emb_dim: int
    groups: int
    dropout: float
    num_heads: int
    attention_resolutions: tuple[int, ...]
    cross_attention_resolutions: tuple[int, ...]
    context_dim: int | None  # None: no context table, no cross-attention

    def res_block(self, in_ch: int, out_ch: int) -> ResBlock:
        return ResBlock(
            in_ch, out_ch, emb_dim=self.emb_dim, groups=self.groups, dropout=self.dropout
        )

    def attention(self, ch: int, res: int, n: int) -> list[SelfAttention]:
        if res not in self.attention_resolutions:
            return []
        return [SelfAttention(ch, heads=self.num_heads, groups=self.groups) for _ in range(n)]

    def cross(self, ch: int, res: int, n: int) -> list[CrossAttention]:
        if self.context_dim is None or res not in self.cross_attention_resolutions:
            return []
        dim, heads, groups = self.context_dim, self.num_heads, self.groups
        return [CrossAttention(ch, dim, heads=heads, groups=groups) for _ in range(n)]


class UNet(nn.Module):
    """(x (B, C, H, W), t (B,) training step, y (B,) class or None) -> (B, C, H, W).

    ``y = None`` on a class-conditional model means the null class (unconditional). With
    ``context_tokens`` (P, L, D) and ``context_mask`` (P, L), a text table of P = classes + 1
    prompts (the last one empty), class ``y`` reads row ``y`` by cross-attention.
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
        text_conditional: bool = False,
        cross_attention_resolutions: Sequence[int] = (8,),
        context_tokens: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> None:
        super().__init__()
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by the downsampling")
        _check_context(text_conditional, context_tokens, context_mask, num_classes)
        if context_tokens is not None:
            # frozen (no gradient), saved in the state dict with the weights
            self.register_buffer("context_tokens", context_tokens.float().clone())
            self.register_buffer("context_mask", context_mask.bool().clone())
        self.text_conditional = text_conditional
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
        learned = num_classes and not text_conditional
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if learned else None

        make = _Blocks(
            emb_dim,
            groups,
            dropout,
            num_heads,
            tuple(attention_resolutions),
            tuple(cross_attention_resolutions),
            None if context_tokens is None else context_tokens.shape[2],
        )
        self.input = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]
        skip_channels = [base_channels]
        ch, res = self._build_down(make, widths, num_res_blocks, image_size, skip_channels)
        res_block = make.res_block
        self.mid = nn.ModuleList([res_block(ch, ch), res_block(ch, ch)])
        self.mid_attention = SelfAttention(ch, heads=num_heads, groups=groups)
        if context_tokens is not None:  # always in the middle, as self-attention
            self.mid_cross = CrossAttention(
                ch, context_tokens.shape[2], heads=num_heads, groups=groups
            )
        ch = self._build_up(make, widths, num_res_blocks, ch, res, skip_channels)
        self.out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1))
        )

    def _build_down(
        self,
        make: _Blocks,
        widths: list[int],
        num_res_blocks: int,
        image_size: int,
        skip_channels: list[int],
    ) -> tuple[int, int]:
        """The encoder's levels and downsamplers; ``skip_channels`` gets each skip's width.
        Returns the channels and resolution at the bottom."""
        res_block, attention, cross = make.res_block, make.attention, make.cross
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch, res = skip_channels[0], image_size
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res_block(ch, width))
                ch = width
                skip_channels.append(ch)
            self.down.append(
                Level(
                    blocks,
                    attention(ch, res, num_res_blocks),
                    up=False,
                    cross=cross(ch, res, num_res_blocks),
                )
            )
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                res //= 2
        return ch, res

    def _build_up(
        self,
        make: _Blocks,
        widths: list[int],
        num_res_blocks: int,
        ch: int,
        res: int,
        skip_channels: list[int],
    ) -> int:
        """The decoder's levels and upsamplers, taking the skips back; returns its channels."""
        res_block, attention, cross = make.res_block, make.attention, make.cross
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(ch + skip_channels.pop(), width))
                ch = width
            n = num_res_blocks + 1
            self.up.append(Level(blocks, attention(ch, res, n), up=True, cross=cross(ch, res, n)))
            if i > 0:
                self.upsample.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(ch, ch, 3, padding=1),
                    )
                )
                res *= 2
        return ch

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """Time embedding plus class embedding: (B, E)."""
        emb = self.time_embed(t)
        if self.class_embed is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)
            emb = emb + self.class_embed(y)
        return emb

    def context(self, t: Tensor, y: Tensor | None) -> Context | None:
        """Each image's prompt from the table (the empty prompt for y = None); None: no table."""
        if not self.text_conditional:
            return None
        if y is None:
            y = torch.full_like(t, self.num_classes)
        return self.context_tokens[y], self.context_mask[y]  # (B, L, D), (B, L)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(t, y)
        context = self.context(t, y)
        h = self.input(x)  # (B, C0, H, W)
        skips = [h]
        for i, level in enumerate(self.down):
            h = level(h, emb, skips, context)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, C, H/2, W/2)
                skips.append(h)
        h = self.mid_attention(self.mid[0](h, emb))
        if context is not None:
            h = self.mid_cross(h, *context)
        h = self.mid[1](h, emb)
        for i, level in enumerate(self.up):
            h = level(h, emb, skips, context)
            if i < len(self.upsample):
                h = self.upsample[i](h)  # (B, C, 2H, 2W)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
