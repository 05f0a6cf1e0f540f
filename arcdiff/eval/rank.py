"""Candidate scores across augmented views: a product of experts with a visit-count bonus.

Each distinct candidate of a test input (a grid in the original frame; the ``top`` most
visited, for the cost) is scored under every augmented view the evaluation sampled: the
candidate is put into the view's frame, corrupted at a few fixed noise levels
(:data:`RANK_LEVELS`) with fixed random numbers shared by all candidates, and the denoiser,
shown the view's test input, gives the mean log-probability of the candidate's colours over the
cells its kernel scores (:meth:`~arcdiff.diffusion.discrete.Kernel.scored_cells`: the masked
cells for the absorbing kernel, whose kept cells are visible on the canvas and merely copied,
though its training loss counts every cell; every cell for the uniform kernel, where any cell
may be noise), an ELBO-style estimate of how likely it finds the candidate; the size
head's log-probability of the candidate's size is added. A view is one expert: the ranking is
the sum over views (ARChitects 2024), plus ``visit_weight`` times log(1 + the number of draws
that found the candidate) (NVARC adds the visit count).
Reads test inputs and candidates only, never a test output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from einops import rearrange, repeat

from arcdiff.data.augment import Augmentation, augment_canvases
from arcdiff.data.encode import encode_grids
from arcdiff.data.tasks import Grid
from arcdiff.diffusion.discrete import MASK, DiscreteDiffusion
from arcdiff.eval.sample import size_mask
from arcdiff.eval.sizes import size_logprobs
from arcdiff.eval.vote import Candidate
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.device import seeded_generator

RANK_LEVELS = (0.25, 0.5, 0.75)  # noise levels scored: fractions t of the training grid

Ranker = Callable[..., list[Candidate]]


@torch.no_grad()
def view_scores(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    grids: Sequence[Grid],
    *,
    test_input: Grid,
    task_id: int,
    views: Sequence[Augmentation],
    side: int,
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
) -> np.ndarray:
    """(C, V) score of each candidate grid (original frame) under each augmented view: mean
    colour log-probability over :data:`RANK_LEVELS` plus the size head's log-probability.
    Deterministic: the corruption's random numbers come from ``seed`` and are the same for
    every candidate of a view."""
    model.eval()
    c, v, levels = len(grids), len(views), len(RANK_LEVELS)
    dihedrals = np.array([a.dihedral for a in views], dtype=np.int64)
    colours = np.stack([a.colours for a in views])
    tokens, sizes = encode_grids(list(grids), side)
    x0, x0_sizes = augment_canvases(  # every candidate under every view, candidate-major
        np.repeat(tokens, v, axis=0),
        np.repeat(sizes, v, axis=0),
        np.tile(dihedrals, c),
        np.tile(colours, (c, 1)),
    )
    test_tokens, test_sizes = encode_grids([test_input], side)
    inputs, _ = augment_canvases(
        np.repeat(test_tokens, v, axis=0), np.repeat(test_sizes, v, axis=0), dihedrals, colours
    )
    inputs_v = torch.from_numpy(inputs.astype(np.int64)).to(device)  # (V, S, S)
    tasks_v = torch.full((v,), task_id, dtype=torch.long, device=device)
    dihedrals_v = torch.from_numpy(dihedrals).to(device)
    size_lp = size_logprobs(model, diffusion, inputs_v, tasks_v, dihedrals_v).cpu()  # (V, 2, S)
    hw = torch.from_numpy(x0_sizes) - 1  # (C*V, 2)
    view_of = torch.arange(c * v) % v
    size_term = size_lp[view_of, 0, hw[:, 0]] + size_lp[view_of, 1, hw[:, 1]]  # (C*V,)

    steps = torch.tensor([round(f * diffusion.num_timesteps) - 1 for f in RANK_LEVELS])
    steps = steps.clamp(0, diffusion.num_timesteps - 1)
    generator = seeded_generator("cpu", seed)  # fixed levels and noise, then moved
    u = torch.rand((levels, v, side, side), generator=generator)  # shared by all candidates
    noise = diffusion.noise_like(torch.zeros((levels, v, side, side), dtype=torch.long), generator)
    clean = repeat(torch.from_numpy(x0.astype(np.int64)), "r h w -> (l r) h w", l=levels)
    valid = size_mask(repeat(torch.from_numpy(x0_sizes), "r k -> (l r) k", l=levels), side)
    u_rows = repeat(u, "l v h w -> (l c v) h w", c=c)
    keep = (u_rows < diffusion.alpha_bar(steps).repeat_interleave(c * v)[:, None, None]) & valid
    noisy = torch.where(keep, clean, repeat(noise, "l v h w -> (l c v) h w", c=c))
    counted = diffusion.kernel.scored_cells(valid, keep)
    counted = torch.where(counted.any(dim=(1, 2), keepdim=True), counted, valid)
    row_view = torch.arange(levels * c * v) % v
    row_step = steps.repeat_interleave(c * v)
    cell_lp = torch.zeros(levels * c * v)
    for start in range(0, len(cell_lp), batch_size):
        rows = slice(start, start + batch_size)
        out = model(
            inputs_v[row_view[rows]],
            noisy[rows].to(device),
            diffusion.logsnr(row_step[rows]).to(device),
            tasks_v[row_view[rows]],
            dihedrals_v[row_view[rows]],
        )
        logp = out.logits.float().log_softmax(-1).cpu()  # (R, S, S, 10)
        picked = logp.gather(-1, clean[rows].clamp(max=MASK - 1)[..., None])[..., 0]
        mask = counted[rows]
        cell_lp[rows] = (picked * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))
    per_level = rearrange(cell_lp, "(l c v) -> l c v", l=levels, c=c)
    return (per_level.mean(0) + size_term.view(c, v)).double().numpy()


def poe_rank(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    candidates: Sequence[Candidate],
    *,
    test_input: Grid,
    task_id: int,
    views: Sequence[Augmentation],
    side: int,
    device: torch.device,
    visit_weight: float = 1.0,
    top: int = 8,
    batch_size: int = 256,
    seed: int = 0,
) -> list[Candidate]:
    """The first ``top`` of ``candidates`` (vote order: the most visited) ranked by the sum of
    their :func:`view_scores` over ``views`` plus ``visit_weight * log(1 + votes)``, best first
    (ties: votes, then confidence, then order), each with its total as ``score``; the rest
    follow in their vote order, unscored (scoring costs a forward pass per candidate, view and
    noise level)."""
    if not candidates:
        return []
    rest = list(candidates[top:])
    candidates = candidates[:top]
    per_view = view_scores(
        model,
        diffusion,
        [cand.grid for cand in candidates],
        test_input=test_input,
        task_id=task_id,
        views=views,
        side=side,
        device=device,
        batch_size=batch_size,
        seed=seed,
    )
    votes = np.array([cand.votes for cand in candidates], dtype=np.float64)
    total = per_view.sum(axis=1) + visit_weight * np.log1p(votes)
    scored = [
        dataclasses.replace(cand, score=float(t)) for cand, t in zip(candidates, total, strict=True)
    ]
    return sorted(scored, key=lambda cand: (-cand.score, -cand.votes, -cand.confidence)) + rest


def ranker_for(
    ranking: str,
    *,
    visit_weight: float = 1.0,
    top: int = 8,
    batch_size: int = 256,
    seed: int = 0,
) -> Ranker | None:
    """What an evaluation's ``eval.ranking`` names: None for the plain count-then-confidence
    vote, :func:`poe_rank` for the product of experts."""
    if ranking == "vote":
        return None
    if ranking == "poe":
        return partial(
            poe_rank, visit_weight=visit_weight, top=top, batch_size=batch_size, seed=seed
        )
    raise ValueError(f"unknown ranking {ranking!r}")
