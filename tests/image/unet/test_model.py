"""The image U-Net and its samplers: shapes, zero start, class conditioning, classifier-free
guidance (scale 0 is the unconditional model), the reverse chain, reconstruction, slerp."""

import pytest
import torch

from arcdiff.diffusion import schedules
from arcdiff.image.gaussian import GaussianDiffusion
from arcdiff.image.unet.model import UNet
from arcdiff.image.unet.sample import (
    Sampler,
    chain,
    denoiser_for,
    denoising_trajectory,
    generate,
    reconstruct,
    slerp,
)

SMALL = dict(base_channels=8, channel_mults=(1, 2), groups=4, num_heads=2)


def perturbed(model: UNet, seed: int = 0) -> UNet:
    """Random weights everywhere, including the zero-initialised convs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(in_channels=1, image_size=16, **SMALL), (3, 1, 16, 16)),
        (dict(in_channels=3, image_size=32, **{**SMALL, "channel_mults": (1, 2, 2)}),
         (2, 3, 32, 32)),
        (dict(in_channels=1, image_size=8, attention_resolutions=(), **SMALL), (2, 1, 8, 8)),
        (dict(in_channels=3, image_size=16, num_res_blocks=2, attention_resolutions=(16, 8),
              num_classes=10, **SMALL), (2, 3, 16, 16)),
    ],
)  # fmt: skip
def test_output_has_the_input_shape_and_each_sample_is_computed_alone(kwargs, shape):
    model = perturbed(UNet(**kwargs))
    x = torch.randn(shape)
    t = torch.randint(0, 1000, (shape[0],))
    y = torch.randint(0, 10, (shape[0],)) if kwargs.get("num_classes") else None
    with torch.no_grad():
        out = model(x, t, y)
        last = model(x[-1:], t[-1:], None if y is None else y[-1:])
    assert out.shape == shape and torch.isfinite(out).all()
    # no layer mixes the batch (GroupNorm, attention over one image's positions)
    assert torch.allclose(out[-1:], last, atol=1e-5)


def test_starts_by_predicting_zero():
    model = UNet(in_channels=1, image_size=16, num_classes=10, **SMALL)
    out = model(torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 500, 999]), torch.arange(4))
    assert torch.equal(out, torch.zeros_like(out))


def test_indivisible_heads_and_sizes_are_errors():
    with pytest.raises(ValueError, match="heads"):
        UNet(in_channels=1, image_size=16, base_channels=8, groups=4, num_heads=3)
    with pytest.raises(ValueError, match="image_size"):
        UNet(in_channels=1, image_size=10, base_channels=8, groups=4, channel_mults=(1, 2, 2))


def test_a_label_changes_its_own_sample_only_and_none_is_the_null_class():
    model = perturbed(UNet(in_channels=1, image_size=16, num_classes=10, **SMALL))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([300, 300])
    with torch.no_grad():
        a, b = model(x, t, torch.tensor([1, 4])), model(x, t, torch.tensor([7, 4]))
        null = model(x, t, torch.tensor([10, 10]))
        none = model(x, t, None)
    assert not torch.allclose(a[0], b[0], atol=1e-3)
    assert torch.allclose(a[1], b[1], atol=1e-6)  # sample 1 kept its label
    assert torch.equal(none, null)


def test_time_conditioning_changes_the_output():
    model = perturbed(UNet(in_channels=1, image_size=16, **SMALL))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([5])), model(x, torch.tensor([900])))


@pytest.fixture
def conditional():
    model = perturbed(UNet(in_channels=1, image_size=8, num_classes=3, **SMALL), seed=1)
    diffusion = GaussianDiffusion(num_timesteps=50, schedule="cosine", prediction="v", clip_x0=1)
    return model, diffusion


def test_guidance_scale_zero_is_the_unconditional_model(conditional):
    model, diffusion = conditional
    noise = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    how = Sampler("ddpm", 10, 0.0, "trailing")
    guided0 = generate(model, diffusion, noise, labels, how, guidance_scale=0.0, seed=3)
    uncond = generate(model, diffusion, noise, None, how, seed=3)
    cond = generate(model, diffusion, noise, labels, how, guidance_scale=1.0, seed=3)
    assert torch.allclose(guided0, uncond, atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)


def test_guidance_scale_one_is_the_conditional_model_and_mixes_linearly(conditional):
    model, _ = conditional
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([10, 20, 30]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, None)
        guided1 = denoiser_for(model, y, 1.0)(x, t)
        guided3 = denoiser_for(model, y, 3.0)(x, t)
    assert torch.equal(guided1, cond)
    assert torch.allclose(guided3, uncond + 3 * (cond - uncond), atol=1e-5)


def test_chain_over_the_full_grid_equals_the_diffusion_sampler(conditional):
    model, diffusion = conditional
    x_T = torch.randn(4, 1, 8, 8)
    denoiser = denoiser_for(model, torch.tensor([0, 1, 2, 0]))
    with torch.no_grad():
        reference = diffusion.sample(
            denoiser, x_T, num_steps=10, spacing="trailing", sampler="ddim"
        )
        timesteps = schedules.inference_timesteps(50, 10, "trailing")
        for step in chain(diffusion, denoiser, x_T, timesteps, sampler="ddim"):
            x = step.prev_sample
    assert torch.allclose(x, reference, atol=1e-6)


def test_trajectory_starts_at_the_noise_and_ends_at_the_sample(conditional):
    model, diffusion = conditional
    noise, labels, how = torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), Sampler(num_steps=10)
    kept, xs, x0s = denoising_trajectory(model, diffusion, noise, labels, how, keep=4)
    timesteps = schedules.inference_timesteps(50, 10, "trailing").tolist()
    assert kept == [timesteps[i] for i in (0, 3, 6, 9)] and kept[0] == 49
    assert xs.shape == x0s.shape == (4, 2, 1, 8, 8)
    assert torch.equal(xs[0], noise)
    # DDIM's last step lands on its predicted x_0: the sample that generate() returns
    assert torch.allclose(x0s[-1], generate(model, diffusion, noise, labels, how), atol=1e-6)


class NoiseOracle(torch.nn.Module):
    """An eps-model that always predicts the noise that was actually added."""

    def __init__(self, noise: torch.Tensor) -> None:
        super().__init__()
        self.noise = torch.nn.Parameter(noise, requires_grad=False)

    def forward(self, x, t, y=None):
        return self.noise


@pytest.mark.parametrize("t_start", [0, 20, 49])
def test_reconstruction_with_the_true_noise_is_exact(t_start):
    """With eps = the added noise, every DDIM step predicts x_0 exactly, so reconstruct() must
    return x_0 whatever step it noises to, provided its chain starts at that step."""
    diffusion = GaussianDiffusion(num_timesteps=50, schedule="cosine", prediction="eps")
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # seed=0's noise
    x_t, recon = reconstruct(NoiseOracle(noise), diffusion, x0, None, t_start, num_steps=5)
    t = torch.full((3,), t_start)
    assert torch.allclose(x_t, diffusion.add_noise(x0, noise, t), atol=1e-6)
    assert torch.allclose(recon, x0, atol=1e-3)  # float32: at t = 49 sqrt(abar) is ~0.001


def test_slerp_hits_both_ends_and_keeps_the_norm():
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(1, 16, 16, generator=gen), torch.randn(1, 16, 16, generator=gen)
    path = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    norms = path.flatten(1).norm(dim=1)
    # two independent 256-d Gaussians are nearly orthogonal: the norm stays near sqrt(256)
    assert (norms - 16).abs().max() < 2.5
    linear = 0.5 * (z0 + z1)
    assert norms[2] > linear.norm() * 1.2
