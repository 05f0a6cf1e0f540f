"""Gaussian diffusion: forward process, targets, conversions, DDPM/DDIM steps, samplers, CFG.

The sampling test runs every sampler x objective through a whole reverse loop with the optimal
denoiser of Gaussian data, E[x_0 | x_t], which has a closed form, and checks the samples' mean
and variance against the data's.
"""

import pytest
import torch

from arcdiff.diffusion import schedules
from arcdiff.errors import ConfigError
from arcdiff.image import gaussian as G
from arcdiff.image.toy2d.model import MLPDenoiser

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
STD = torch.tensor([0.5, 2.0], dtype=torch.float64)  # one axis narrower, one wider than noise


def analytic_denoiser(diffusion: G.GaussianDiffusion, mu: torch.Tensor = MU):
    """The Bayes-optimal model output for x_0 ~ N(mu, diag(STD^2)), in the diffusion's objective.

    ``mu`` is (2,) or one mean per sample (B, 2).
    """

    def denoise(x_t, t):
        a = diffusion.abar_at(t).sqrt()[:, None]
        b = (1 - diffusion.abar_at(t)).sqrt()[:, None]
        x0 = mu + a * STD**2 / (a**2 * STD**2 + b**2) * (x_t - a * mu)  # E[x_0 | x_t]
        eps = (x_t - a * x0) / b
        out = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[diffusion.prediction]
        return out.to(x_t.dtype)

    return denoise


SAMPLERS = [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)]
N = 20_000


def sampler_moments(diffusion, num_steps, spacing, sampler, eta, mu=MU):
    """Exact mean and variance of the sampler's output for the analytic denoiser.

    Every step is affine in x_t plus independent noise (x_s = A x_t + B + sigma z), so the
    moments of x_T ~ N(0, I) propagate in closed form; this includes the discretisation error
    that a finite number of steps makes.
    """
    steps = schedules.inference_timesteps(diffusion.num_timesteps, num_steps, spacing)
    mean, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for t, s in zip(steps, schedules.previous_timesteps(steps), strict=True):
        abar_t, abar_s = diffusion.abar_at(t), diffusion.abar_at(s)
        a, b = abar_t.sqrt(), (1 - abar_t).sqrt()
        k = a * STD**2 / (a**2 * STD**2 + b**2)  # x0_hat = k x_t + (1 - k a) MU
        d0 = (1 - k * a) * mu
        if sampler == "ddpm":  # posterior mean c1 x0_hat + c2 x_t, variance beta_tilde
            alpha = abar_t / abar_s
            c1 = abar_s.sqrt() * (1 - alpha) / (1 - abar_t)
            c2 = alpha.sqrt() * (1 - abar_s) / (1 - abar_t)
            sigma2 = (1 - alpha) * (1 - abar_s) / (1 - abar_t)
            A, B = c1 * k + c2, c1 * d0
        else:  # sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z
            sigma2 = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
            c = (1 - abar_s - sigma2).sqrt()
            A = abar_s.sqrt() * k + c * (1 - a * k) / b
            B = abar_s.sqrt() * d0 - c * a * d0 / b
        mean, var = A * mean + B, A**2 * var + sigma2
    return mean, var


def check_samples(x, diffusion, num_steps, spacing, sampler, eta, mu=MU):
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    mean, var = x.mean(0), x.var(0)
    # against the data: loose, because 100 DDPM steps underestimate the variance (up to 12%)
    assert ((mean - mu).abs() < 5 * STD / N**0.5 + 0.02).all(), mean
    assert torch.allclose(var, STD**2, rtol=0.15), var
    # against the closed-form moments of this sampler: only sampling noise remains
    exp_mean, exp_var = sampler_moments(diffusion, num_steps, spacing, sampler, eta, mu)
    assert ((mean - exp_mean).abs() < 5 * exp_var.sqrt() / N**0.5).all(), (mean, exp_mean)
    assert torch.allclose(var, exp_var, rtol=5 * (2 / N) ** 0.5), (var, exp_var)


@pytest.mark.parametrize(("sampler", "eta"), SAMPLERS)
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_whole_sampling_loop_recovers_gaussian_data(sampler, eta, prediction):
    diffusion = G.GaussianDiffusion(num_timesteps=1000, schedule="cosine", prediction=prediction)
    sample_and_check(diffusion, "linspace", sampler, eta, seed=0)


def sample_and_check(diffusion, spacing, sampler, eta, *, seed):
    """100 steps of the whole loop from float64 noise with the analytic denoiser, checked."""
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    x = diffusion.sample(
        analytic_denoiser(diffusion),
        x_T,
        num_steps=100,
        spacing=spacing,
        sampler=sampler,
        eta=eta,
        generator=gen,
    )
    check_samples(x, diffusion, 100, spacing, sampler, eta)


@pytest.mark.parametrize("prediction", ["v", "x0"])
@pytest.mark.parametrize(("sampler", "eta"), SAMPLERS)
def test_zero_terminal_snr_sampling(prediction, sampler, eta):
    diffusion = G.GaussianDiffusion(
        num_timesteps=1000, schedule="linear", prediction=prediction, zero_terminal_snr=True
    )
    assert diffusion.alpha_bar[-1].item() == 0.0
    sample_and_check(diffusion, "trailing", sampler, eta, seed=1)


def test_moments_closed_form_catches_a_wrong_variance():
    """The check above can fail: a sampler with the DDPM variance doubled is rejected."""
    diffusion = G.GaussianDiffusion(num_timesteps=1000, schedule="cosine", prediction="eps")
    gen = torch.Generator().manual_seed(0)
    denoise = analytic_denoiser(diffusion)
    x = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    steps = schedules.inference_timesteps(1000, 100, "linspace")
    for t, s in zip(steps.tolist(), schedules.previous_timesteps(steps).tolist(), strict=True):
        tt, ss = torch.full((N,), t), torch.full((N,), s)
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype) * 2**0.5
        x = diffusion.ddpm_step(denoise(x, tt), x, tt, ss, noise=z).prev_sample
    with pytest.raises(AssertionError):
        check_samples(x, diffusion, 100, "linspace", "ddpm", 0.0)


def test_zero_terminal_snr_refuses_eps():
    with pytest.raises(ConfigError, match="zero_terminal_snr"):
        G.GaussianDiffusion(prediction="eps", zero_terminal_snr=True)


def test_add_noise_closed_form_and_variance_preserving():
    diffusion = G.GaussianDiffusion(num_timesteps=100, schedule="cosine")
    x0 = torch.tensor([[3.0, -1.0]])
    noise = torch.tensor([[0.5, 2.0]])
    t = torch.tensor([40])
    a = diffusion.alpha_bar[40].item()
    expected = torch.tensor(
        [[3.0 * a**0.5 + 0.5 * (1 - a) ** 0.5, -(a**0.5) + 2.0 * (1 - a) ** 0.5]]
    )
    assert torch.allclose(diffusion.add_noise(x0, noise, t), expected)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(100_000, 1, generator=gen)
    x_t = diffusion.add_noise(
        x0, torch.randn(100_000, 1, generator=gen), torch.full((100_000,), 70)
    )
    assert x_t.var().item() == pytest.approx(1.0, abs=0.02)


def test_abar_at_minus_one_is_clean_data():
    diffusion = G.GaussianDiffusion(num_timesteps=10)
    assert diffusion.abar_at(torch.tensor([-1, 0, 9])).tolist() == [
        1.0,
        diffusion.alpha_bar[0].item(),
        diffusion.alpha_bar[9].item(),
    ]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_target_is_inverted_by_split(prediction):
    diffusion = G.GaussianDiffusion(num_timesteps=50, schedule="linear", prediction=prediction)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    t = torch.randint(0, 50, (64,), generator=gen)
    x_t = diffusion.add_noise(x0, noise, t)
    got_x0, got_eps = diffusion.split(diffusion.target(x0, noise, t), x_t, t)
    assert torch.allclose(got_x0, x0, atol=1e-4)
    assert torch.allclose(got_eps, noise, atol=1e-4)


def test_conversions_round_trip():
    gen = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(10, 3, generator=gen, dtype=torch.float64),
        torch.randn(10, 3, generator=gen, dtype=torch.float64),
    )
    abar = torch.rand(10, 1, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    v = G.v_from_x0_eps(x0, eps, abar)
    assert torch.allclose(G.x0_from_eps(x_t, eps, abar), x0)
    assert torch.allclose(G.eps_from_x0(x_t, x0, abar), eps)
    assert torch.allclose(G.x0_from_v(x_t, v, abar), x0)
    assert torch.allclose(G.eps_from_v(x_t, v, abar), eps)


def test_ddpm_step_equals_ddim_eta_one_and_ho_et_al_for_single_steps():
    diffusion = G.GaussianDiffusion(num_timesteps=20, schedule="linear")
    gen = torch.Generator().manual_seed(0)
    x_t, out, z = (torch.randn(8, 2, generator=gen) for _ in range(3))
    t, s = torch.full((8,), 12), torch.full((8,), 7)
    ddpm = diffusion.ddpm_step(out, x_t, t, s, noise=z)
    ddim = diffusion.ddim_step(out, x_t, t, s, eta=1.0, noise=z)
    assert torch.allclose(ddpm.prev_sample, ddim.prev_sample, atol=1e-6)
    # one step t -> t - 1: Ho et al. 2020 eq. 11 with sigma_t^2 = beta_tilde_t
    betas = schedules.discrete_betas("linear", 20)
    abar = diffusion.alpha_bar
    t1, s1 = torch.full((8,), 12), torch.full((8,), 11)
    step = diffusion.ddpm_step(out, x_t, t1, s1, noise=z)
    mean = (x_t - betas[12] / (1 - abar[12]).sqrt() * out) / (1 - betas[12]).sqrt()
    var = betas[12] * (1 - abar[11]) / (1 - abar[12])
    assert torch.allclose(step.prev_sample, (mean + var.sqrt() * z).float(), atol=1e-5)


def test_ddim_eta_zero_is_deterministic_and_final_step_returns_x0():
    diffusion = G.GaussianDiffusion(num_timesteps=20, prediction="x0")
    x_t, out = torch.randn(4, 2), torch.randn(4, 2)
    t, s = torch.full((4,), 5), torch.full((4,), -1)
    a = diffusion.ddim_step(out, x_t, t, s, eta=0.0, noise=torch.randn(4, 2))
    b = diffusion.ddim_step(out, x_t, t, s, eta=0.0, noise=torch.randn(4, 2))
    assert torch.equal(a.prev_sample, b.prev_sample)
    assert torch.allclose(a.prev_sample, out)  # landing on the data returns the predicted x_0
    c = diffusion.ddpm_step(out, x_t, t, s, noise=torch.randn(4, 2))
    assert torch.allclose(c.prev_sample, out)


def test_clip_x0_is_optional_and_off_by_default():
    x_t, t = torch.tensor([[5.0, -5.0]]), torch.tensor([3])
    out = torch.tensor([[4.0, -4.0]])
    plain = G.GaussianDiffusion(num_timesteps=10, prediction="x0")
    assert plain.split(out, x_t, t)[0].tolist() == [[4.0, -4.0]]
    clipped = G.GaussianDiffusion(num_timesteps=10, prediction="x0", clip_x0=1.0)
    x0, eps = clipped.split(out, x_t, t)
    assert x0.tolist() == [[1.0, -1.0]]
    assert torch.allclose(clipped.add_noise(x0, eps, t), x_t, atol=1e-5)


def test_classifier_free_guidance_scales():
    torch.manual_seed(0)
    model = MLPDenoiser(num_classes=3, hidden_dim=32, embedding_dim=16)
    torch.nn.init.normal_(model.class_embed.weight)
    x, t = torch.randn(5, 2), torch.randint(0, 100, (5,))
    y, null = torch.tensor([0, 1, 2, 0, 1]), torch.full((5,), 3)
    cond, uncond = model(x, t, y), model(x, t, null)
    assert not torch.allclose(cond, uncond)
    guide = lambda s: G.classifier_free_guidance(model, y, null, s)(x, t)  # noqa: E731
    assert torch.allclose(guide(0.0), uncond, atol=1e-6)
    assert torch.allclose(guide(1.0), cond, atol=1e-6)
    assert torch.allclose(guide(3.0), uncond + 3 * (cond - uncond), atol=1e-5)


@pytest.mark.parametrize(("sampler", "eta"), SAMPLERS[:2])
def test_guided_sampling_loop_draws_the_closed_form_mix(sampler, eta):
    """Guidance on two Gaussian classes of one covariance: the optimal eps is linear in the
    mean, so uncond + w (cond - uncond) is the optimal denoiser of N(mu_u + w (mu_c - mu_u)),
    and the guided loop must draw that Gaussian (w = 2.5 puts it far from both classes)."""
    diffusion = G.GaussianDiffusion(num_timesteps=1000, schedule="cosine", prediction="eps")
    means = torch.stack([MU, torch.tensor([-1.0, 1.0], dtype=torch.float64)])  # class 0, null
    model = lambda x, t, y: analytic_denoiser(diffusion, means[y])(x, t)  # noqa: E731
    cond, null = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    gen = torch.Generator().manual_seed(2)
    x_T = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    guided = G.classifier_free_guidance(model, cond, null, 2.5)
    x = diffusion.sample(
        guided, x_T, num_steps=100, spacing="linspace", sampler=sampler, eta=eta, generator=gen
    )
    mix = means[1] + 2.5 * (means[0] - means[1])  # (4, -6.5)
    check_samples(x, diffusion, 100, "linspace", sampler, eta, mix)
