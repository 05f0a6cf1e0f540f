"""The image U-Net and its samplers: shapes, zero start, class conditioning, classifier-free
guidance (scale 0 is the unconditional model), the reverse chain, slerp."""

import pytest
import torch

from arcdiff.diffusion import schedules
from arcdiff.image.gaussian import GaussianDiffusion
from arcdiff.image.image_sample import (
    Sampler,
    chain,
    denoiser_for,
    denoising_trajectory,
    generate,
    reconstruct,
    slerp,
)
from arcdiff.image.unet import UNet

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
def test_output_has_the_input_shape(kwargs, shape):
    model = perturbed(UNet(**kwargs))
    x = torch.randn(shape)
    t = torch.randint(0, 1000, (shape[0],))
    y = torch.randint(0, 10, (shape[0],)) if kwargs.get("num_classes") else None
    out = model(x, t, y)
    assert out.shape == shape and torch.isfinite(out).all()


def test_starts_by_predicting_zero():
    model = UNet(in_channels=1, image_size=16, num_classes=10, **SMALL)
    out = model(torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 500, 999]), torch.arange(4))
    assert torch.equal(out, torch.zeros_like(out))


def test_indivisible_heads_and_sizes_are_errors():
    with pytest.raises(ValueError, match="heads"):
        UNet(in_channels=1, image_size=16, base_channels=8, groups=4, num_heads=3)
    with pytest.raises(ValueError, match="image_size"):
        UNet(in_channels=1, image_size=10, base_channels=8, groups=4, channel_mults=(1, 2, 2))


def test_class_conditioning_changes_the_output_and_none_is_the_null_class():
    model = perturbed(UNet(in_channels=1, image_size=16, num_classes=10, **SMALL))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([300, 300])
    with torch.no_grad():
        a, b = model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([7, 7]))
        null = model(x, t, torch.tensor([10, 10]))
        none = model(x, t, None)
    assert not torch.allclose(a, b, atol=1e-3)
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


def test_trajectory_and_reconstruction_shapes(conditional):
    model, diffusion = conditional
    kept, xs, x0s = denoising_trajectory(
        model, diffusion, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), Sampler(num_steps=10),
        keep=4,
    )  # fmt: skip
    assert len(kept) == 4 and kept == sorted(kept, reverse=True) and kept[0] == 49
    assert xs.shape == x0s.shape == (4, 2, 1, 8, 8)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    x_t, recon = reconstruct(model, diffusion, x0, None, 20, num_steps=5)
    assert x_t.shape == recon.shape == x0.shape and recon.abs().max() <= 1


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
