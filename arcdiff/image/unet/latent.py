"""Latent diffusion: the VAE run a latent model lives in, and the dataset encoded once.

``latents_for_run`` encodes the training images with the VAE's posterior mean the first time and
caches them in the U-Net's run (latents.pt, with a fingerprint of the VAE's weights); a resumed
run reads the cache back instead of encoding again, and refuses latents of another VAE. Latents
are scaled to unit standard deviation (Rombach et al. 2022, section 4.3.2), the scale kept with
them. The VAE travels inside every U-Net checkpoint (``LatentSpace.to_dict``), so sampling and
decoding need only the U-Net's run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arcdiff.errors import CheckpointError
from arcdiff.image.unet.vae import VAE
from arcdiff.runs.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from arcdiff.runs.paths import checkpoint_path

VAE_KIND = "arcdiff.image.vae"
LATENT_FILE = "latents.pt"


@dataclass
class LatentSpace:
    """A frozen VAE and the factor that gives its latents unit standard deviation."""

    vae: VAE
    scale: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.vae.latent_shape

    @torch.no_grad()
    def encode(self, images: Tensor, batch: int = 500) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] -> scaled posterior means (N, Z, h, w)."""
        device = next(self.vae.parameters()).device
        return torch.cat(
            [self.vae.encode(x.to(device))[0] * self.scale for x in images.split(batch)]
        )

    @torch.no_grad()
    def decode(self, latents: Tensor, batch: int = 500) -> Tensor:
        """Scaled latents -> images in [-1, 1], on the latents' device."""
        device = next(self.vae.parameters()).device
        out = [
            self.vae.decode(z.to(device) / self.scale).clamp(-1, 1).to(latents.device)
            for z in latents.split(batch)
        ]
        return torch.cat(out)

    def to_dict(self) -> dict[str, Any]:
        """What a U-Net checkpoint stores to decode without the VAE's run."""
        return {
            "model_args": self.vae.model_args,
            "weights": self.vae.state_dict(),
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], where: str) -> LatentSpace:
        vae = VAE(**state["model_args"])
        load_state_strict(vae, state["weights"], f"{where} (vae)")
        return cls(vae.eval().requires_grad_(False), float(state["scale"]))


def load_vae_run(run_dir: Path, where: str = "latent.vae_run") -> tuple[VAE, dict[str, Any]]:
    """The VAE of a run written by ``arcdiff image vae`` and its checkpoint; clear errors."""
    path = checkpoint_path(run_dir, "final")
    if not path.is_file():
        raise CheckpointError(
            f"{where}: {run_dir} is not a VAE run (no checkpoints/final.pt); train one with "
            "`arcdiff image vae --config ...`"
        )
    state = load_checkpoint(path)
    if state.get("kind") != VAE_KIND:
        raise CheckpointError(
            f"{where}: {path} is not a VAE checkpoint (kind {state.get('kind')!r})"
        )
    vae = VAE(**state["model_args"])
    load_state_strict(vae, state["model"], f"{where}: {path}")
    return vae.eval().requires_grad_(False), state


def fingerprint(weights: dict[str, Tensor]) -> str:
    """sha256 of a state dict's names and bytes: which VAE made a cache."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latents_for_run(
    vae_run: str, run_dir: Path, images: Tensor, *, resume: bool
) -> tuple[LatentSpace, Tensor]:
    """(latent space, scaled latents (N, Z, h, w)) of ``images`` in [-1, 1], cached in the run."""
    vae, state = load_vae_run(Path(vae_run))
    expected = (vae.in_channels, vae.image_size, vae.image_size)
    if tuple(images.shape[1:]) != expected:
        raise CheckpointError(
            f"latent.vae_run: the VAE in {vae_run} encodes images of shape {expected}, this "
            f"config's data are {tuple(images.shape[1:])}"
        )
    mark = fingerprint(state["model"])
    cache = run_dir / LATENT_FILE
    if cache.is_file():
        cached = load_checkpoint(cache)
        if cached.get("vae_fingerprint") == mark and len(cached["latents"]) == len(images):
            return LatentSpace(vae, float(cached["scale"])), cached["latents"]
        if resume:
            raise CheckpointError(
                f"{cache}: latents of another VAE or other images than latent.vae_run={vae_run}; "
                "the model in this run cannot continue on them (train a new run)"
            )
    means = LatentSpace(vae, 1.0).encode(images).cpu()
    space = LatentSpace(vae, 1.0 / means.std().item())
    latents = means * space.scale
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        cache,
        {
            "model": {},
            "config": {},
            "latents": latents,
            "scale": space.scale,
            "vae_fingerprint": mark,
            "vae_run": str(vae_run),
        },
    )
    return space, latents
