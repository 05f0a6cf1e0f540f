"""Whole discrete sampling loops against closed forms, for both kernels.

The denoiser is the Bayes-optimal p(x0 | x_t) of a known grid distribution, so ancestral
sampling with the exact reverse step must reproduce that distribution. The sampler draws every
cell on its own, which is exact for independent cells at any number of steps; for a mixture of
whole grids only the per-cell marginals are exact at N = 1, and whole grids come back as N grows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arcdiff.diffusion.discrete import KERNELS, NUM_COLOURS, DiscreteDiffusion, sampling_steps

PRIOR = torch.tensor([0.6, 0.3, 0.1] + [0.0] * (NUM_COLOURS - 3))  # colours 0, 1, 2
GRID_A = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
GRID_B = torch.tensor([[2, 1, 0], [0, 3, 3], [1, 1, 1]])  # differs from A in every cell
MIXTURE = torch.tensor([0.7, 0.3])  # P(A), P(B)
CELLS = (1500, 3, 3)  # 13,500 independent cells: one standard error of 0.6 is 0.0042
GRIDS = (2000, 3, 3)  # one standard error of a 0.7 share is 0.010


class OldPosterior(DiscreteDiffusion):
    """The reverse step before issue 20: D3PM's eq. 4 without the 1 / q(x_t | x0) weight
    (uniform kernel) and the x0 argmax instead of a sample on the last step (both kernels)."""

    def posterior(self, x_t, probs, step, next_step):
        if next_step < 0:
            return F.one_hot(probs.argmax(-1), self.kernel.num_states).float()
        if self.kernel.mask_token is not None:  # absorbing
            return super().posterior(x_t, probs, step, next_step)
        a_t = self.alpha_bar(torch.tensor(step)).item()
        a_s = self.alpha_bar(torch.tensor(next_step)).item()
        onehot = F.one_hot(x_t, NUM_COLOURS).float()
        post = (a_t / a_s * onehot + (1 - a_t / a_s) / NUM_COLOURS) * (
            a_s * probs + (1 - a_s) / NUM_COLOURS
        )
        return post / post.sum(-1, keepdim=True)


def likelihood(diffusion: DiscreteDiffusion, x_t, step):
    """(B, S, S, 10) q(x_t | x0 = i) for every clean colour i."""
    a = diffusion.alpha_bar(torch.tensor(step)).item()
    return diffusion.kernel.transitions(a).T[x_t]  # checked against corruption in test_discrete


def independent_cells(diffusion, x_t, step):
    """Bayes p(x0 | x_t) when every cell is drawn from PRIOR on its own, as logits."""
    return (PRIOR * likelihood(diffusion, x_t, step)).clamp(min=1e-30).log()


def two_grids(diffusion, x_t, step):
    """Bayes p(x0 | x_t) per cell when the whole grid is A or B (MIXTURE), as logits."""
    onehots = F.one_hot(torch.stack([GRID_A, GRID_B]), NUM_COLOURS).float()  # (G, S, S, 10)
    lik = likelihood(diffusion, x_t, step)
    # a canvas no grid explains (cells drawn on their own can mix A and B) counts each
    # mismatched cell as likelihood 1e-30 instead of 0, so p(grid | x_t) stays defined
    per_cell = torch.einsum("bxyk,gxyk->bgxy", lik, onehots).clamp(min=1e-30)
    log_lik = per_cell.log().sum(dim=(2, 3))  # (B, G)
    which = (log_lik + MIXTURE.log()).softmax(-1)  # p(grid | x_t)
    return torch.einsum("bg,gxyk->bxyk", which, onehots).clamp(min=1e-30).log()


def run_loop(diffusion, denoiser, num_steps, shape, *, argmax=False):
    gen = torch.Generator().manual_seed(0)
    x = diffusion.noise_like(torch.zeros(shape, dtype=torch.long), gen)
    valid = torch.ones(shape, dtype=torch.bool)
    steps = sampling_steps(diffusion.num_timesteps, num_steps).tolist()
    for step, next_step in zip(steps, steps[1:] + [-1], strict=True):
        logits = denoiser(diffusion, x, step)
        x = diffusion.reverse_step(
            x, logits, step, next_step, valid, argmax=argmax, generator=gen
        ).prev_sample
    return x


def colour_histogram(x):
    return torch.bincount(x.flatten(), minlength=NUM_COLOURS + 1).float() / x.numel()


def histogram_error(diffusion, num_steps):
    """Largest |sampled - target| colour frequency after an ancestral loop on PRIOR."""
    x = run_loop(diffusion, independent_cells, num_steps, CELLS)
    return (colour_histogram(x)[:NUM_COLOURS] - PRIOR).abs().max().item()


# 5 standard errors of the most likely colour (p = 0.6) over CELLS
HISTOGRAM_TOLERANCE = 5 * math.sqrt(0.6 * 0.4 / math.prod(CELLS))


@pytest.mark.parametrize("num_steps", [1, 8, 128])
@pytest.mark.parametrize("kernel", KERNELS)
def test_ancestral_loop_reproduces_independent_cell_colours(kernel, num_steps):
    diffusion = DiscreteDiffusion(kernel=KERNELS[kernel], num_timesteps=128)
    assert histogram_error(diffusion, num_steps) < HISTOGRAM_TOLERANCE


@pytest.mark.parametrize(
    ("kernel", "num_steps"),
    [("uniform", 1), ("uniform", 8), ("uniform", 128), ("absorbing", 1)],
)
def test_the_histogram_check_catches_the_old_posterior(kernel, num_steps):
    # uniform, 128 steps: the old step ends at [0.52, 0.32, 0.16] for [0.6, 0.3, 0.1]. The
    # absorbing kernel's old masked-cell formula was already exact (q(MASK | x0) = 1 - a_t for
    # every x0); only its argmax on the last step is wrong, which shows at N = 1.
    diffusion = OldPosterior(kernel=KERNELS[kernel], num_timesteps=128)
    assert histogram_error(diffusion, num_steps) > 2 * HISTOGRAM_TOLERANCE


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_step_loop_reproduces_the_mixture_cell_marginals(kernel):
    x = run_loop(DiscreteDiffusion(kernel=KERNELS[kernel]), two_grids, 1, GRIDS)
    share_a = (x == GRID_A).float().mean().item()  # A and B differ in every cell
    assert (x == GRID_B).float().mean().item() == pytest.approx(1 - share_a, abs=1e-9)
    assert abs(share_a - 0.7) < 5 * math.sqrt(0.21 / math.prod(GRIDS))


@pytest.mark.parametrize("kernel", KERNELS)
def test_long_loop_reproduces_the_two_grid_mixture(kernel):
    x = run_loop(DiscreteDiffusion(kernel=KERNELS[kernel]), two_grids, 128, GRIDS)
    is_a = (x == GRID_A).all(dim=(1, 2)).float().mean().item()
    is_b = (x == GRID_B).all(dim=(1, 2)).float().mean().item()
    tolerance = 4 * math.sqrt(0.21 / GRIDS[0])  # 4 standard errors of a 0.7 share: 0.041
    assert abs(is_a - 0.7) < tolerance and abs(is_b - 0.3) < tolerance
    assert 1 - is_a - is_b < 0.03  # grids that mix A and B: cells drawn on their own


@pytest.mark.parametrize("num_steps", [1, 8, 128])
@pytest.mark.parametrize("kernel", KERNELS)
def test_deterministic_loop_returns_the_mode(kernel, num_steps):
    diffusion = DiscreteDiffusion(kernel=KERNELS[kernel])
    cells = run_loop(diffusion, independent_cells, num_steps, (4, 3, 3), argmax=True)
    assert (cells == 0).all()
    grids = run_loop(diffusion, two_grids, num_steps, (4, 3, 3), argmax=True)
    assert (grids == GRID_A).all()
