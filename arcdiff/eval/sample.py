"""Sampling output grids from a trained denoiser.

Starting from pure noise on the whole canvas, the sampler visits N steps of the training grid
(``sampling_steps``), noisiest first. At each step a first pass gives logits; with
self-conditioning a second pass at the same step takes them as its self-conditioning input.
The output size is the size head's argmax, re-read at every step; cells outside it are
re-noised as in training. The sampler is given test *inputs* only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.model.denoiser import Denoiser


@dataclass(frozen=True)
class Samples:
    tokens: Tensor  # (B, S, S) int64 colours, PAD outside each predicted grid
    sizes: Tensor  # (B, 2) int64 predicted (h, w)
    confidence: Tensor  # (B,) mean max-probability over the predicted grid's cells


def size_mask(sizes: Tensor, s: int) -> Tensor:
    """(B, S, S) bool: True inside (h, w) grids."""
    idx = torch.arange(s, device=sizes.device)
    return (idx[None, :, None] < sizes[:, 0, None, None]) & (
        idx[None, None, :] < sizes[:, 1, None, None]
    )


@torch.no_grad()
def sample(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    inputs: Tensor,
    task: Tensor,
    dihedral: Tensor,
    *,
    num_steps: int = 32,
    argmax: bool = True,
    two_pass: bool = True,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample an output grid for each input canvas.

    inputs (B, S, S) tokens (PAD outside the grid), task (B,), dihedral (B,).
    ``argmax``: deterministic (each step feeds the x0 argmax forward); otherwise ancestral
    sampling of the posterior. ``two_pass``: second, self-conditioned pass at every step.
    """
    model.eval()
    b, s, _ = inputs.shape
    device = inputs.device
    x = diffusion.noise_like(torch.zeros_like(inputs), generator).to(device)
    steps = sampling_steps(diffusion.num_timesteps, num_steps).tolist()
    for i, step in enumerate(steps):
        logsnr = diffusion.logsnr(torch.full((b,), step)).to(device)
        out = model(inputs, x, logsnr, task, dihedral)
        sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1  # (B, 2) as (h, w)
        if two_pass and model.self_condition:
            valid = size_mask(sizes, s)
            out = model(inputs, x, logsnr, task, dihedral, sc_logits=out.logits, valid=valid)
            sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1
        valid = size_mask(sizes, s)
        next_step = steps[i + 1] if i + 1 < len(steps) else -1
        x = diffusion.reverse_step(
            x, out.logits, step, next_step, valid, argmax=argmax, generator=generator
        ).prev_sample
    probs = out.logits.float().softmax(-1).amax(-1)  # (B, S, S)
    confidence = (probs * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2))
    return Samples(tokens=torch.where(valid, x, PAD), sizes=sizes, confidence=confidence)
