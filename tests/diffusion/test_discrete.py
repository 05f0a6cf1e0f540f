import math
import typing

import pytest
import torch
import torch.nn.functional as F

from arcdiff.config import DiffusionConfig
from arcdiff.diffusion.discrete import (
    KERNELS,
    MASK,
    NUM_COLOURS,
    DiscreteDiffusion,
    sampling_steps,
)
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
    d = DiscreteDiffusion(kernel=KERNELS[kernel], num_timesteps=T)
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
    absorbing = DiscreteDiffusion(kernel=KERNELS["absorbing"]).corrupt(
        x0, torch.zeros(256).long(), valid
    )
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


def test_every_config_kernel_is_registered():
    kernels = typing.get_args(typing.get_type_hints(DiffusionConfig)["kernel"])
    assert kernels == tuple(KERNELS)
    assert all(name == kernel.name for name, kernel in KERNELS.items())


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("step", [5, 60, 127])
def test_transitions_are_the_corruption_frequencies(kernel, step):
    # q(x_t = j | x0 = i) from 57,600 corrupted cells against the kernel's closed form
    a, x0, x_t = _corrupt_stats(kernel, step)
    q = KERNELS[kernel].transitions(a)  # (10, K)
    assert q.shape == (NUM_COLOURS, KERNELS[kernel].num_states)
    assert torch.allclose(q.sum(1), torch.ones(NUM_COLOURS))
    counts = torch.zeros_like(q).index_put_((x0.flatten(), x_t.flatten()), torch.ones(1), True)
    freq = counts / counts.sum(1, keepdim=True)  # ~5,760 cells per clean colour
    assert (freq - q).abs().max() < 0.025


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_likelihood_scores_every_cell_whose_clean_colour_the_canvas_hides(kernel):
    # a cell is left out only when its noisy token pins its clean colour down (absorbing: a
    # kept colour), so the model's log-probability there would be a copy, not evidence
    d = DiscreteDiffusion(kernel=KERNELS[kernel], num_timesteps=T)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, NUM_COLOURS, (8, 6, 6), generator=gen)
    valid = torch.zeros_like(x0, dtype=torch.bool)
    valid[:, :4, :5] = True
    a = d.alpha_bar(torch.tensor(60)).item()
    kept = (torch.rand(x0.shape, generator=gen) < a) & valid
    x_t = torch.where(kept, x0, d.noise_like(x0, gen))
    pinned = (d.kernel.transitions(a).T[x_t] > 0).sum(-1) == 1  # one x0 can give x_t
    assert torch.equal(d.kernel.scored_cells(valid, kept), valid & ~pinned)


def _bayes_posterior(kernel, x_t, p0, a_t, a_s):
    """Exact Bayes by transition matrices and a loop over x0:
    sum_x0 p(x0 | x_t) q(x_t | x_s) q(x_s | x0) / q(x_t | x0)."""
    q_s = KERNELS[kernel].transitions(a_s)  # q(x_s = j | x0 = i)
    q_t = KERNELS[kernel].transitions(a_t)  # q(x_t = l | x0 = i)
    k = q_s.shape[1]
    q_ts = torch.zeros(k, k)  # q(x_t = l | x_s = j): a colour keeps with a_t / a_s
    q_ts[:NUM_COLOURS] = KERNELS[kernel].transitions(a_t / a_s)
    for noise in range(NUM_COLOURS, k):  # a noise-only token (MASK) stays what it is
        q_ts[noise, noise] = 1.0
    post = torch.zeros(k)
    for i in range(NUM_COLOURS):
        if q_t[i, x_t] > 0:
            post += p0[i] * q_s[i] * q_ts[:, x_t] / q_t[i, x_t]
    return post


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("step", "next_step"), [(60, 40), (127, 0), (5, -1)])
def test_posterior_matches_bayes_for_soft_predictions(kernel, step, next_step):
    d = DiscreteDiffusion(kernel=KERNELS[kernel], num_timesteps=T)
    a_t, a_s = d.alpha_bar(torch.tensor([step, next_step])).tolist()
    gen = torch.Generator().manual_seed(0)
    k = d.kernel.num_states
    probs = (torch.randn(1, 2, k, NUM_COLOURS, generator=gen) * 2).softmax(-1)
    x_t = torch.arange(k).view(1, 1, -1).expand(1, 2, -1)  # every x_t value
    # a Bayes p(x0 | x_t) is 0 on the x0 that cannot give x_t (absorbing: a colour cell is
    # its own x0)
    probs = probs * (d.kernel.transitions(a_t).T[x_t] > 0)
    probs = probs / probs.sum(-1, keepdim=True)
    post = d.posterior(x_t, probs, step, next_step)
    expected = torch.stack(
        [
            _bayes_posterior(kernel, int(x_t[0, r, c]), probs[0, r, c], a_t, a_s)
            for r in range(x_t.shape[1])
            for c in range(x_t.shape[2])
        ]
    ).view_as(post)
    assert torch.allclose(post, expected, atol=1e-5)
    assert torch.allclose(post.sum(-1), torch.ones(post.shape[:-1]))
    if next_step < 0:  # landing on clean data samples the x0 prediction itself
        assert torch.allclose(post[..., :NUM_COLOURS], probs, atol=1e-5)


def test_reverse_step_argmax_and_renoises_outside():
    logits = torch.randn(256, 4, 4, NUM_COLOURS)
    valid = torch.zeros(256, 4, 4, dtype=torch.bool)
    valid[:, :2, :3] = True
    for kernel in KERNELS.values():
        d = DiscreteDiffusion(kernel=kernel, num_timesteps=T)
        x_t = d.noise_like(torch.zeros(256, 4, 4, dtype=torch.long))
        final = d.reverse_step(x_t, logits, 3, -1, valid, argmax=True)
        assert torch.equal(final.prev_sample, logits.argmax(-1))  # clean: no re-noising
        mid = d.reverse_step(x_t, logits, 3, 1, valid, argmax=True)
        assert torch.equal(mid.prev_sample[valid], logits.argmax(-1)[valid])
        outside = mid.prev_sample[~valid]
        if kernel.mask_token is not None:
            assert (outside == kernel.mask_token).all()
        else:  # fresh uniform colours: about 1 in 10 hits the argmax
            hits = (outside == logits.argmax(-1)[~valid]).float().mean().item()
            assert abs(hits - 0.1) < 0.02 and outside.max() < NUM_COLOURS


def test_absorbing_reverse_step_unmasks_the_expected_share():
    d = DiscreteDiffusion(kernel=KERNELS["absorbing"], num_timesteps=T)
    x_t = torch.full((32, 30, 30), MASK)
    logits = torch.zeros(32, 30, 30, NUM_COLOURS)
    logits[..., 4] = 50.0
    valid = torch.ones_like(x_t, dtype=torch.bool)
    a_t, a_s = d.alpha_bar(torch.tensor(100)).item(), d.alpha_bar(torch.tensor(80)).item()
    out = d.reverse_step(x_t, logits, 100, 80, valid, generator=torch.Generator().manual_seed(0))
    unmasked = out.prev_sample != MASK
    assert abs(unmasked.float().mean().item() - (a_s - a_t) / (1 - a_t)) < 0.01
    assert (out.prev_sample[unmasked] == 4).all()


def test_a_kernel_without_its_algorithms_cannot_be_built():
    from arcdiff.diffusion.discrete import Kernel

    class Partial(Kernel):  # noise but no q(x_t | x0) or posterior
        name, num_states = "partial", 10

        def noise_like(self, x0, generator=None):
            return torch.zeros_like(x0)

    with pytest.raises(TypeError, match="abstract"):
        Partial()
