"""A small convolutional VAE (Kingma & Welling 2014) for latent diffusion (Rombach et al. 2022).

Encoder: conv, then per level a residual block (the U-Net's, without a time embedding) and a
strided conv down (none after the last level), then GN-SiLU-conv to the posterior's mean and
log-variance with ``latent_channels`` each. Decoder: the mirror image with nearest + conv
upsampling. ``len(channel_mults) - 1`` levels halve the side, so 16x16 digits with mults
(1, 2) become 8x8 latents. The loss is the per-pixel MSE plus ``kl_weight`` times the KL
divergence to N(0, I) per latent element: a light KL keeps the latents close to a Gaussian's
scale without blurring the reconstructions much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Block(nn.Module):
    """GN-SiLU-conv twice, plus a (1x1) skip: a residual block without conditioning."""

    def __init__(self, in_ch: int, out_ch: int, *, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, in_ch),
            nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


@dataclass(frozen=True)
class VAEOutput:
    reconstruction: Tensor  # (B, C, H, W)
    mean: Tensor  # (B, Z, h, w)
    logvar: Tensor  # (B, Z, h, w)


class VAE(nn.Module):
    """images (B, C, H, W) in [-1, 1] <-> latents (B, Z, H / 2^(n-1), W / 2^(n-1))."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 16,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        latent_channels: int = 2,
        groups: int = 8,
    ) -> None:
        super().__init__()
        self.factor = 2 ** (len(channel_mults) - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size {image_size} is not divisible by {self.factor}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.latent_channels = latent_channels
        self.model_args = {  # rebuilds this VAE from a checkpoint
            "in_channels": in_channels,
            "image_size": image_size,
            "base_channels": base_channels,
            "channel_mults": list(channel_mults),
            "latent_channels": latent_channels,
            "groups": groups,
        }
        widths = [base_channels * m for m in channel_mults]
        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        ch = widths[0]
        for i, width in enumerate(widths):
            enc.append(Block(ch, width, groups=groups))
            ch = width
            if i < len(widths) - 1:
                enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        enc += [
            nn.GroupNorm(groups, ch),
            nn.SiLU(),
            nn.Conv2d(ch, 2 * latent_channels, 3, padding=1),
        ]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1)]
        for i, width in reversed(list(enumerate(widths))):
            dec.append(Block(ch, width, groups=groups))
            ch = width
            if i > 0:
                dec += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(ch, ch, 3, padding=1),
                ]
        dec += [nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.factor
        return (self.latent_channels, side, side)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior (mean, log-variance), each (B, Z, h, w)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> VAEOutput:
        """Reparameterised sample z = mean + std * noise, decoded (noise None: the mean)."""
        mean, logvar = self.encode(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return VAEOutput(self.decode(z), mean, logvar)


def vae_loss(x: Tensor, out: VAEOutput, kl_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, reconstruction MSE per pixel, KL to N(0, I) per latent element)."""
    mse = F.mse_loss(out.reconstruction, x)
    kl = 0.5 * (out.mean**2 + out.logvar.exp() - 1 - out.logvar).mean()
    return mse + kl_weight * kl, mse, kl
