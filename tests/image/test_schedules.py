"""Noise schedules: closed forms, discretisation, zero terminal SNR, inference-step grids."""

import math

import pytest
import torch

from arcdiff.diffusion import schedules as S


def test_linear_and_quadratic_betas_match_ddpm():
    betas = S.discrete_betas("linear", 100)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(
        betas[1:] - betas[:-1], torch.full((99,), (0.02 - 1e-4) / 99, dtype=torch.float64)
    )
    quad = S.discrete_betas("quadratic", 100)
    roots = quad.sqrt()
    assert quad[0].item() == pytest.approx(1e-4) and quad[-1].item() == pytest.approx(0.02)
    assert torch.allclose(
        roots[1:] - roots[:-1], torch.full((99,), (0.02**0.5 - 0.01) / 99, dtype=torch.float64)
    )


def test_alpha_bars_are_cumulative_products():
    betas = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
    expected = torch.tensor([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.5], dtype=torch.float64)
    assert torch.allclose(S.alpha_bars_from_betas(betas), expected)


def test_cosine_discrete_matches_continuous_on_the_grid():
    n = 50
    abar = S.alpha_bars_from_betas(S.discrete_betas("cosine", n))
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    cont = S.alpha_bar(grid, "cosine")
    # identical until the 0.999 clip of the last betas (Nichol & Dhariwal)
    assert torch.allclose(abar[: n - 2], cont[: n - 2], rtol=1e-9)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert S.alpha_bar(torch.tensor(0.3, dtype=torch.float64), "cosine").item() == pytest.approx(
        f(0.3) / f(0)
    )


@pytest.mark.parametrize("schedule", ["linear", "quadratic"])
def test_continuous_time_is_the_limit_of_1000_ddpm_steps(schedule):
    abar = S.alpha_bars_from_betas(S.discrete_betas(schedule, 1000))
    grid = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert (abar - S.alpha_bar(grid, schedule)).abs().max() < 5e-3


@pytest.mark.parametrize("schedule", S.SCHEDULES)
def test_logsnr_is_decreasing_and_consistent(schedule):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    lam = S.logsnr(t, schedule)
    assert (lam[1:] < lam[:-1]).all()
    a = S.alpha_bar(t, schedule)
    assert torch.allclose(torch.sigmoid(lam), a, rtol=1e-9)  # abar = sigmoid(logsnr)


def test_zero_terminal_snr_rescale():
    abar = S.alpha_bars_from_betas(S.discrete_betas("linear", 1000))
    new = S.rescale_zero_terminal_snr(abar)
    assert new[-1].item() == 0.0
    assert new[0].item() == pytest.approx(abar[0].item(), rel=1e-12)
    # sqrt(abar) is an affine function of the old one (Lin et al. 2023, Alg. 1)
    ratio = (new.sqrt()[1:] - new.sqrt()[:-1]) / (abar.sqrt()[1:] - abar.sqrt()[:-1])
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))
    assert (new[1:] < new[:-1]).all()


@pytest.mark.parametrize(
    ("spacing", "train", "steps", "expected"),
    [
        ("leading", 10, 4, [6, 4, 2, 0]),
        ("trailing", 10, 4, [9, 7, 4, 1]),
        ("linspace", 10, 4, [9, 6, 3, 0]),
        ("leading", 1000, 10, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        ("trailing", 1000, 3, [999, 666, 332]),  # round(1000 - i * 1000 / 3) - 1
        ("linspace", 1000, 3, [999, 500, 0]),
    ],
)
def test_inference_timesteps_exact(spacing, train, steps, expected):
    assert S.inference_timesteps(train, steps, spacing).tolist() == expected


@pytest.mark.parametrize("spacing", S.SPACINGS)
@pytest.mark.parametrize(
    ("train", "steps"), [(10, 4), (1000, 3), (1000, 7), (100, 100), (1000, 50)]
)
def test_previous_timestep_is_the_next_visited_step(spacing, train, steps):
    ts = S.inference_timesteps(train, steps, spacing)
    prev = S.previous_timesteps(ts)
    assert prev[-1].item() == -1  # the last step lands on the data (abar = 1)
    assert prev[:-1].tolist() == ts[1:].tolist()
    assert (prev < ts).all() and len(set(ts.tolist())) == steps
    if spacing == "leading":  # only here does t - train // steps give the same answer
        assert prev.tolist() == (ts - train // steps).clamp(min=-1).tolist()


def test_library_prev_formula_is_wrong_for_trailing_and_linspace():
    for spacing, expected in [("trailing", [7, 4, 1, -1]), ("linspace", [6, 3, 0, -1])]:
        ts = S.inference_timesteps(10, 4, spacing)
        assert S.previous_timesteps(ts).tolist() == expected
        assert (ts - 10 // 4).tolist() != expected


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown schedule"):
        S.alpha_bar(torch.tensor(0.5), "sigmoid")
    with pytest.raises(ValueError, match="num_steps"):
        S.inference_timesteps(10, 11, "leading")
