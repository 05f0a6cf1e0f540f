"""Sampling from an image U-Net: (guided) denoisers, the reverse chain, reconstruction, slerp.

``chain`` runs DDPM or DDIM steps over any descending list of training steps, so the same loop
draws samples from pure noise and reconstructs images from x_t at an intermediate step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from arcdiff.diffusion import schedules
from arcdiff.image.gaussian import Denoiser, GaussianDiffusion, StepOutput, classifier_free_guidance
from arcdiff.image.unet.model import UNet
from arcdiff.image.unet.run import Run


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _clamped(x: Tensor, clamp: float | None) -> Tensor:
    """Images end in [-clamp, clamp]; latents (clamp None) keep their range."""
    return x if clamp is None else x.clamp(-clamp, clamp)


def denoiser_for(model: UNet, labels: Tensor | None, guidance_scale: float = 1.0) -> Denoiser:
    """A (x_t, t) -> output function for ``labels`` (None: the unconditional model).

    guidance 1 runs the conditional model alone; any other scale mixes conditional and
    unconditional outputs (Ho & Salimans 2022), so scale 0 is the unconditional model.
    """
    if labels is None or model.num_classes == 0:
        return lambda x, t: model(x, t, None)
    if guidance_scale == 1.0:
        return lambda x, t: model(x, t, labels)
    null = torch.full_like(labels, model.num_classes)
    return classifier_free_guidance(model, labels, null, guidance_scale)


@dataclass(frozen=True)
class Sampler:
    """How to walk the reverse chain."""

    sampler: str = "ddim"  # "ddpm" (ancestral) or "ddim"
    num_steps: int = 50
    eta: float = 0.0
    spacing: str = "trailing"


def chain(
    diffusion: GaussianDiffusion,
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    *,
    sampler: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Iterator[StepOutput]:
    """Reverse steps from x at timesteps[0] through timesteps[1:] to the data (step -1).

    GaussianDiffusion.sample_steps always starts at the noisiest step and draws its noise on
    x's device; this loop starts anywhere and draws noise on the CPU, so a seed gives the same
    samples on every device.
    """
    prevs = schedules.previous_timesteps(timesteps)
    for t, s in zip(timesteps.tolist(), prevs.tolist(), strict=True):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        ss = torch.full_like(tt, s)
        out = denoiser(x, tt)
        noise = torch.randn(x.shape, generator=generator).to(x)
        if sampler == "ddpm":
            step = diffusion.ddpm_step(out, x, tt, ss, noise=noise)
        else:
            step = diffusion.ddim_step(out, x, tt, ss, eta=eta, noise=noise)
        x = step.prev_sample
        yield step


def sampling_timesteps(diffusion: GaussianDiffusion, how: Sampler) -> Tensor:
    return schedules.inference_timesteps(
        diffusion.num_timesteps,
        how.num_steps,
        how.spacing,  # type: ignore[arg-type]
    )


@torch.no_grad()
def generate(
    model: UNet,
    diffusion: GaussianDiffusion,
    noise: Tensor,
    labels: Tensor | None,
    how: Sampler,
    *,
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 500,
    clamp: float | None = 1.0,
) -> Tensor:
    """Samples (N, C, H, W) on the CPU from the given starting noise, in batches; clamped to
    [-clamp, clamp] (images), or not (None: latents)."""
    gen = torch.Generator().manual_seed(seed)
    device = device_of(model)
    timesteps = sampling_timesteps(diffusion, how)
    outs = []
    for start in range(0, len(noise), batch_size):
        x = noise[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        denoiser = denoiser_for(model, y, guidance_scale)
        steps = chain(
            diffusion, denoiser, x, timesteps, sampler=how.sampler, eta=how.eta, generator=gen
        )
        for step in steps:
            x = step.prev_sample
        outs.append(_clamped(x, clamp).cpu())
    return torch.cat(outs)


def draw(
    run: Run,
    noise: Tensor,
    labels: Tensor | None,
    how: Sampler,
    *,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] from a run's EMA model: ``generate`` in the run's model
    space, decoded to pixels by a latent run's VAE."""
    samples = generate(
        run.ema,
        run.diffusion,
        noise,
        labels,
        how,
        guidance_scale=guidance_scale,
        seed=seed,
        clamp=run.clamp,
    )
    return run.to_pixels(samples)


@torch.no_grad()
def denoising_trajectory(
    model: UNet,
    diffusion: GaussianDiffusion,
    noise: Tensor,
    labels: Tensor | None,
    how: Sampler,
    *,
    keep: int = 8,
    guidance_scale: float = 1.0,
    seed: int = 0,
    clamp: float | None = 1.0,
) -> tuple[list[int], Tensor, Tensor]:
    """x_t and predicted x_0 at ``keep`` evenly spaced steps of the chain.

    Returns (training steps, x_t (keep, N, C, H, W), predicted x_0 (keep, N, C, H, W)).
    """
    gen = torch.Generator().manual_seed(seed)
    timesteps = sampling_timesteps(diffusion, how)
    chosen = set(torch.linspace(0, len(timesteps) - 1, keep).round().long().tolist())
    device = device_of(model)
    denoiser = denoiser_for(model, None if labels is None else labels.to(device), guidance_scale)
    x, kept_t, xs, x0s = noise.to(device), [], [], []
    steps = chain(
        diffusion, denoiser, x, timesteps, sampler=how.sampler, eta=how.eta, generator=gen
    )
    for i, (t, step) in enumerate(zip(timesteps.tolist(), steps, strict=True)):
        if i in chosen:
            kept_t.append(t)
            xs.append(x.cpu())
            x0s.append(_clamped(step.pred_x0, clamp).cpu())
        x = step.prev_sample
    return kept_t, torch.stack(xs), torch.stack(x0s)


@torch.no_grad()
def reconstruct(
    model: UNet,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    labels: Tensor | None,
    t_start: int,
    *,
    num_steps: int = 50,
    seed: int = 0,
    clamp: float | None = 1.0,
) -> tuple[Tensor, Tensor]:
    """Noise x0 to step ``t_start``, then run deterministic DDIM back: (x_t, reconstruction)."""
    gen = torch.Generator().manual_seed(seed)
    device = device_of(model)
    x0 = x0.to(device)
    labels = None if labels is None else labels.to(device)
    noise = torch.randn(x0.shape, generator=gen).to(x0)
    t = torch.full((len(x0),), t_start, dtype=torch.long, device=x0.device)
    x_t = diffusion.add_noise(x0, noise, t)
    n = min(num_steps, t_start + 1)
    timesteps = torch.linspace(t_start, 0, n, dtype=torch.float64).round().long()
    timesteps = timesteps.unique_consecutive()  # descending, t_start first
    x = x_t
    for step in chain(diffusion, denoiser_for(model, labels), x_t, timesteps, sampler="ddim"):
        x = step.prev_sample
    return x_t.cpu(), _clamped(x, clamp).cpu()


def slerp(z0: Tensor, z1: Tensor, alpha: Tensor) -> Tensor:
    """Spherical interpolation between two noises (C, H, W) at each alpha (A,): (A, C, H, W).

    Keeps the norm of Gaussian noise, unlike a straight line (Shoemake 1985; White 2016).
    """
    a, b = z0.flatten(), z1.flatten()
    omega = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))
    w0 = torch.sin((1 - alpha) * omega) / torch.sin(omega)  # (A,)
    w1 = torch.sin(alpha * omega) / torch.sin(omega)
    return w0[:, None, None, None] * z0[None] + w1[:, None, None, None] * z1[None]
