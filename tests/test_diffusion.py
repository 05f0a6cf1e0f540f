import math

import pytest
import torch
import torch.nn.functional as F

from arcdiff.diffusion.discrete import MASK, NUM_COLOURS, DiscreteDiffusion, sampling_steps
from arcdiff.errors import ConfigError

T = 128


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_alpha_bar_falls_monotonically_from_about_one_to_about_zero(schedule):
    d = DiscreteDiffusion(schedule=schedule, num_timesteps=T)
    a = d.alpha_bar(torch.arange(-1, T))
    assert a[0] == 1.0 and a[1] > 0.99 and a[-1] < 1e-3
    assert (a[1:] < a[:-1]).all()
    logsnr = d.logsnr(torch.arange(T))
    assert (logsnr[1:] <= logsnr[:-1]).all() and logsnr.abs().max() <= 20


@pytest.mark.parametrize("n", [1, 2, 32, 128])
def test_sampling_steps_strictly_decrease_from_noisiest_to_cleanest(n):
    steps = sampling_steps(T, n)
    assert len(steps) == n and steps[0] == T - 1
    assert (steps[1:] < steps[:-1]).all()
    if n > 1:
        assert steps[-1] == 0


def test_sampling_steps_exact_values():
    assert sampling_steps(T, 1).tolist() == [127]
    assert sampling_steps(T, 2).tolist() == [127, 0]
    assert sampling_steps(T, 128).tolist() == list(range(127, -1, -1))
    assert sampling_steps(T, 32).tolist() == [round(127 - i * 127 / 31) for i in range(32)]
    assert sampling_steps(10, 4).tolist() == [9, 6, 3, 0]


def test_more_sampling_steps_than_training_steps_is_a_config_error():
    with pytest.raises(ConfigError, match="num_steps=129 must be in 1..num_timesteps=128"):
        sampling_steps(T, 129)


def _corrupt_stats(kernel, step):
    d = DiscreteDiffusion(kernel=kernel, num_timesteps=T)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, NUM_COLOURS, (64, 30, 30), generator=gen)
    valid = torch.ones_like(x0, dtype=torch.bool)
    x_t = d.corrupt(x0, torch.full((64,), step), valid, gen)
    return d.alpha_bar(torch.tensor(step)).item(), x0, x_t


@pytest.mark.parametrize("step", [5, 40, 90, 127])
def test_uniform_corruption_matches_the_formula(step):
    a, x0, x_t = _corrupt_stats("uniform", step)
    n = x0.numel()  # 57,600 cells: 4 standard errors is about 0.008
    same = (x_t == x0).float().mean().item()
    expected = a + (1 - a) / NUM_COLOURS  # kept, or resampled to the same colour
    assert abs(same - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-9
    changed = x_t[x_t != x0]
    if len(changed) > 1000:  # a changed cell is uniform over the other 9 colours
        offsets = (changed - x0[x_t != x0]) % NUM_COLOURS
        counts = torch.bincount(offsets, minlength=NUM_COLOURS)[1:].float()
        assert (counts / counts.sum() - 1 / 9).abs().max() < 0.02
    assert x_t.max() < NUM_COLOURS


@pytest.mark.parametrize("step", [5, 60, 127])
def test_absorbing_corruption_matches_the_formula(step):
    a, x0, x_t = _corrupt_stats("absorbing", step)
    masked = (x_t == MASK).float().mean().item()
    assert abs(masked - (1 - a)) < 0.01
    kept = x_t != MASK
    assert (x_t[kept] == x0[kept]).all()


def test_outside_the_valid_region_is_pure_noise():
    d = DiscreteDiffusion(num_timesteps=T)
    x0 = torch.zeros(256, 10, 10, dtype=torch.long)
    valid = torch.zeros_like(x0, dtype=torch.bool)
    valid[:, :3, :3] = True
    x_t = d.corrupt(x0, torch.zeros(256, dtype=torch.long), valid)  # step 0: almost clean
    assert (x_t[valid] == 0).float().mean() > 0.99
    outside = x_t[~valid]
    assert abs((outside == 0).float().mean().item() - 0.1) < 0.01
    absorbing = DiscreteDiffusion(kernel="absorbing").corrupt(x0, torch.zeros(256).long(), valid)
    assert (absorbing[~valid] == MASK).all()


def test_loss_is_zero_for_confident_truth_and_log10_for_uniform_logits():
    d = DiscreteDiffusion()
    x0 = torch.randint(0, NUM_COLOURS, (4, 5, 5))
    sizes = torch.tensor([[5, 5], [3, 2], [1, 1], [4, 5]])
    valid = torch.zeros_like(x0, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes.tolist()):
        valid[i, :h, :w] = True
    x0 = torch.where(valid, x0, 10)  # PAD outside the grid never enters the loss
    perfect = F.one_hot(x0.clamp(max=9), NUM_COLOURS).float() * 100
    size_logits = F.one_hot(sizes - 1, 5).float() * 100
    loss, parts = d.loss(perfect, size_logits, x0, sizes, valid, size_loss_weight=0.1)
    assert loss.item() < 1e-6
    flat = torch.zeros(4, 5, 5, NUM_COLOURS)
    loss, parts = d.loss(flat, torch.zeros(4, 2, 5), x0, sizes, valid, size_loss_weight=0.5)
    assert parts["colour_loss"].item() == pytest.approx(math.log(10), rel=1e-5)
    assert parts["size_loss"].item() == pytest.approx(math.log(5), rel=1e-5)
    assert loss.item() == pytest.approx(math.log(10) + 0.5 * math.log(5), rel=1e-5)


def _bayes_posterior(x_t, p0, a_t, a_s, k=NUM_COLOURS):
    """Exact Bayes by transition matrices: sum_x0 p(x0) q(x_t|x_s) q(x_s|x0) / q(x_t|x0)."""
    eye = torch.eye(k)
    q_s = a_s * eye + (1 - a_s) / k  # q(x_s = j | x0 = i)
    q_ts = (a_t / a_s) * eye + (1 - a_t / a_s) / k  # q(x_t = l | x_s = j)
    q_t = a_t * eye + (1 - a_t) / k  # q(x_t = l | x0 = i)
    post = torch.zeros(k)
    for i in range(k):
        joint = q_s[i] * q_ts[:, x_t]  # over j
        post += p0[i] * joint / q_t[i, x_t]
    return post


def test_uniform_posterior_matches_bayes_with_a_confident_prediction():
    d = DiscreteDiffusion(num_timesteps=T)
    a_t = d.alpha_bar(torch.tensor(60)).item()
    a_s = d.alpha_bar(torch.tensor(40)).item()
    x_t = torch.tensor([[[3]]])
    probs = torch.zeros(1, 1, 1, NUM_COLOURS)
    probs[..., 7] = 1.0  # the model is sure x0 = 7
    post = d._posterior(x_t, probs, a_t, a_s)[0, 0, 0]
    assert torch.allclose(post, _bayes_posterior(3, probs[0, 0, 0], a_t, a_s), atol=1e-6)
    assert post.argmax() == 7 and post.sum().item() == pytest.approx(1.0)


def test_reverse_step_to_clean_returns_the_argmax_and_renoises_outside():
    d = DiscreteDiffusion(num_timesteps=T)
    logits = torch.randn(2, 4, 4, NUM_COLOURS)
    x_t = torch.randint(0, NUM_COLOURS, (2, 4, 4))
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[:, :2, :3] = True
    final = d.reverse_step(x_t, logits, 3, -1, valid)
    assert torch.equal(final.prev_sample, logits.argmax(-1))
    mid = d.reverse_step(x_t, logits, 3, 1, valid, argmax=True)
    assert torch.equal(mid.prev_sample[valid], logits.argmax(-1)[valid])


def test_absorbing_reverse_step_unmasks_the_expected_share():
    d = DiscreteDiffusion(kernel="absorbing", num_timesteps=T)
    x_t = torch.full((32, 30, 30), MASK)
    logits = torch.zeros(32, 30, 30, NUM_COLOURS)
    logits[..., 4] = 50.0
    valid = torch.ones_like(x_t, dtype=torch.bool)
    a_t, a_s = d.alpha_bar(torch.tensor(100)).item(), d.alpha_bar(torch.tensor(80)).item()
    out = d.reverse_step(x_t, logits, 100, 80, valid, generator=torch.Generator().manual_seed(0))
    unmasked = out.prev_sample != MASK
    assert abs(unmasked.float().mean().item() - (a_s - a_t) / (1 - a_t)) < 0.01
    assert (out.prev_sample[unmasked] == 4).all()
