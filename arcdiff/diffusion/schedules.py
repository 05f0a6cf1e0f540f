"""Noise schedules in continuous time, their DDPM discretisation, and inference-step grids.

Continuous time t in [0, 1]: t = 0 is clean data, t = 1 is (nearly) pure noise.
``alpha_bar(t)`` is the signal fraction of a variance-preserving process
(x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps) and ``logsnr(t)`` =
log(alpha_bar / (1 - alpha_bar)). Nothing here knows about grids, images or tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ScheduleName = Literal["cosine", "linear", "quadratic"]
Spacing = Literal["leading", "trailing", "linspace"]
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "quadratic")
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace")

# DDPM's betas 1e-4 -> 0.02 over 1000 steps, as a continuous rate beta(t) = 1000 * beta_i
# (Song et al. 2021, VP SDE: beta_min = 0.1, beta_max = 20).
BETA_MIN, BETA_MAX = 0.1, 20.0
COSINE_OFFSET = 0.008  # Nichol & Dhariwal 2021, eq. 17
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: clip betas to avoid a singularity at t = 1


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def alpha_bar(t: Tensor, schedule: ScheduleName) -> Tensor:
    """Signal fraction alpha_bar(t) for t in [0, 1]; decreasing from ~1 to ~0."""
    _check_schedule(schedule)
    t = torch.as_tensor(t, dtype=torch.float64) if not torch.is_tensor(t) else t
    if schedule == "cosine":

        def f(s: Tensor | float) -> Tensor:
            return (
                torch.cos(torch.as_tensor((s + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2))
                ** 2
            )

        return (f(t) / f(0.0).to(t)).clamp(0.0, 1.0)
    if schedule == "linear":  # integral of beta(s) = b0 + s (b1 - b0)
        integral = BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2
    else:  # quadratic: sqrt(beta) linear in t
        r0, r1 = math.sqrt(BETA_MIN), math.sqrt(BETA_MAX)
        integral = ((r0 + t * (r1 - r0)) ** 3 - r0**3) / (3 * (r1 - r0))
    return torch.exp(-integral)


def logsnr(t: Tensor, schedule: ScheduleName) -> Tensor:
    """log(alpha_bar / (1 - alpha_bar)) at t in [0, 1]; -inf where alpha_bar = 0."""
    a = alpha_bar(t, schedule)
    return torch.log(a) - torch.log1p(-a)


def discrete_betas(
    schedule: ScheduleName,
    num_steps: int,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Tensor:
    """DDPM betas over ``num_steps`` training steps (float64, shape (num_steps,)).

    linear / quadratic: beta_start -> beta_end, linear in beta or in sqrt(beta) (Ho et al. 2020),
    not rescaled with num_steps. cosine: beta_i = 1 - abar((i+1)/N) / abar(i/N), clipped to 0.999
    (Nichol & Dhariwal 2021).
    """
    _check_schedule(schedule)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if schedule == "quadratic":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    grid = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    a = alpha_bar(grid, "cosine")
    return (1 - a[1:] / a[:-1]).clamp(max=MAX_BETA)


def alpha_bars_from_betas(betas: Tensor) -> Tensor:
    """Cumulative product of (1 - beta): alpha_bar at each discrete step."""
    return torch.cumprod(1 - betas, dim=0)


def rescale_zero_terminal_snr(alpha_bars: Tensor) -> Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR exactly 0, keeping the first.

    Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1.
    Pair it with v-prediction: with alpha_bar = 0 an eps-prediction says nothing about x_0.
    """
    root = alpha_bars.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root**2


def inference_timesteps(num_train: int, num_steps: int, spacing: Spacing) -> Tensor:
    """Which of the ``num_train`` training steps the sampler visits, in sampling order.

    Spacings as in Lin et al. 2023, Table 2: leading = 0, k, 2k, ... (k = num_train // num_steps);
    trailing = round(num_train - i * num_train / num_steps) - 1; linspace = round(linspace(0,
    num_train - 1, num_steps)). Returned descending (first step = noisiest), int64.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= num_train:
        raise ValueError(f"num_steps must be in 1..{num_train}, got {num_steps}")
    if spacing == "leading":
        steps = torch.arange(num_steps, dtype=torch.float64) * (num_train // num_steps)
    elif spacing == "trailing":
        steps = torch.round(num_train - torch.arange(num_steps) * (num_train / num_steps)) - 1
        steps = steps.flip(0)
    else:
        steps = torch.round(torch.linspace(0, num_train - 1, num_steps, dtype=torch.float64))
    return steps.flip(0).long()


def previous_timesteps(timesteps: Tensor) -> Tensor:
    """The step each sampling step moves to: the next entry of ``timesteps``, then -1 (= data).

    -1 stands for alpha_bar = 1. Computing it as t - num_train // num_steps, as a popular
    library does, is only right for leading spacing.
    """
    return torch.cat([timesteps[1:], timesteps.new_tensor([-1])])
