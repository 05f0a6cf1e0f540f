"""The sampling loop: output grids from a trained denoiser.

Starting from pure noise on the whole canvas, the sampler visits N steps of the training grid
(``sampling_steps``), noisiest first. At each step a first pass gives logits; with
self-conditioning a second pass at the same step takes them as its self-conditioning input.
The output size is the size head's argmax, re-read at every step, or fixed in advance (the
evaluator's size vote, :mod:`arcdiff.eval.sizes`: every augmented view of a test input reads
its size head once, at the noisiest step, and they agree on one size); cells outside it are
re-noised as in training. The sampler is given test *inputs* only. :func:`sample` is the
argmax and ancestral samplers of :mod:`arcdiff.eval.samplers`; :func:`denoise` and
:func:`finish` are shared with the confidence sampler (:mod:`arcdiff.eval.decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.model.denoiser import Denoiser, DenoiserOutput


@dataclass(frozen=True)
class Samples:
    tokens: Tensor  # (B, S, S) int64 colours, PAD outside each predicted grid
    sizes: Tensor  # (B, 2) int64 predicted (h, w)
    confidence: Tensor  # (B,) mean max-probability over the predicted grid's cells
    # the second most likely grid under the final per-cell distribution: the argmax with its
    # least certain cell (smallest top-1 / top-2 log-probability margin) set to its top-2 colour
    runner_up: Tensor  # (B, S, S)
    runner_up_confidence: Tensor  # (B,)


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
    sizes: Tensor | None = None,
) -> Samples:
    """Sample an output grid for each input canvas.

    inputs (B, S, S) tokens (PAD outside the grid), task (B,), dihedral (B,).
    ``argmax``: deterministic (each step feeds the x0 argmax forward); otherwise ancestral
    sampling of the posterior. ``two_pass``: second, self-conditioned pass at every step.
    ``sizes`` (B, 2) as (h, w): fixed output sizes (e.g. agreed across augmentations by
    :func:`~arcdiff.eval.sizes.size_votes`); None reads the size head at every step.
    ``generator``: on the inputs' device (:func:`~arcdiff.runs.device.seeded_generator`);
    None draws from torch's global generator.
    """
    model.eval()
    b, s, _ = inputs.shape
    device = inputs.device
    x = diffusion.noise_like(torch.zeros_like(inputs), generator)
    steps = sampling_steps(diffusion.num_timesteps, num_steps).tolist()
    fixed = None if sizes is None else sizes.to(device).clamp(1, s)
    for i, step in enumerate(steps):
        logsnr = diffusion.logsnr(torch.full((b,), step)).to(device)
        out, step_sizes = denoise(model, inputs, x, logsnr, task, dihedral, fixed, two_pass)
        valid = size_mask(step_sizes, s)
        next_step = steps[i + 1] if i + 1 < len(steps) else -1
        x = diffusion.reverse_step(
            x, out.logits, step, next_step, valid, argmax=argmax, generator=generator
        ).prev_sample
    return finish(out.logits, x, valid, step_sizes)


def denoise(
    model: Denoiser,
    inputs: Tensor,
    x: Tensor,
    logsnr: Tensor,
    task: Tensor,
    dihedral: Tensor,
    fixed: Tensor | None,
    two_pass: bool,
) -> tuple[DenoiserOutput, Tensor]:
    """One step's prediction for the canvas ``x`` (B, S, S) and the (B, 2) sizes it samples at:
    ``fixed``, or the size head's argmax. With self-conditioning and ``two_pass``, a second
    pass takes the first one's logits."""
    s = x.shape[-1]
    out = model(inputs, x, logsnr, task, dihedral)
    sizes = fixed if fixed is not None else out.size_logits.argmax(-1).clamp(max=s - 1) + 1
    if two_pass and model.self_condition:
        valid = size_mask(sizes, s)
        out = model(inputs, x, logsnr, task, dihedral, sc_logits=out.logits, valid=valid)
        if fixed is None:
            sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1
    return out, sizes


def finish(logits: Tensor, x: Tensor, valid: Tensor, sizes: Tensor) -> Samples:
    """The sampler's output from its last step: the grid ``x`` (B, S, S) inside ``valid``, its
    confidence and runner-up under the last step's ``logits`` (B, S, S, 10)."""
    b, s, _ = x.shape
    probs = logits.float().softmax(-1)  # (B, S, S, 10)
    top = probs.topk(2, dim=-1)
    cells = valid.sum(dim=(1, 2))
    confidence = (top.values[..., 0] * valid).sum(dim=(1, 2)) / cells
    margin = (top.values[..., 0].log() - top.values[..., 1].log()).masked_fill(~valid, torch.inf)
    flip = F.one_hot(margin.flatten(1).argmin(1), s * s).view(b, s, s).bool()  # (B, S, S)
    runner_up = torch.where(flip, top.indices[..., 1], x)
    swapped = (top.values[..., 1] * flip).sum(dim=(1, 2)) - (top.values[..., 0] * flip).sum(
        dim=(1, 2)
    )
    return Samples(
        tokens=torch.where(valid, x, PAD),
        sizes=sizes,
        confidence=confidence,
        runner_up=torch.where(valid, runner_up, PAD),
        runner_up_confidence=confidence + swapped / cells,
    )
