"""The VAE and latent diffusion: shapes, a reconstruction that improves with training, the
latents encoded once and reused on resume, sampling that decodes from the run alone, and one
clear error for each wrong ``latent.vae_run``."""

import orjson
import pytest
import torch
from typer.testing import CliRunner

from arcdiff.cli.image import image_app
from arcdiff.errors import CheckpointError
from arcdiff.image.unet.latent import LATENT_FILE, LatentSpace, load_vae_run
from arcdiff.image.unet.run import load_data, load_run, to_model_range
from arcdiff.image.unet.train import train_image_model
from arcdiff.image.unet.vae import VAE, vae_loss
from arcdiff.image.unet.vae_train import reconstruction_mse, train_vae

from ..cli_errors import one_error_line
from .test_text import TEXT, random_table
from .test_train import tiny

pytest.importorskip("sklearn")

VAE_TINY = ["vae.base_channels=8", "vae.groups=4", "vae.batch_size=16", "vae.warmup_steps=5"]


@pytest.mark.parametrize(
    "mults, latent_channels, shape",
    [((1, 2), 2, (2, 8, 8)), ((1, 2, 2), 4, (4, 4, 4)), ((1,), 1, (1, 16, 16))],
)
def test_vae_encodes_and_decodes_with_the_configured_shapes(mults, latent_channels, shape):
    vae = VAE(
        in_channels=1,
        image_size=16,
        base_channels=8,
        channel_mults=mults,
        latent_channels=latent_channels,
        groups=4,
    )
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (3, *shape) == (3, *vae.latent_shape)
    assert vae.decode(mean).shape == x.shape
    out = vae(x, torch.randn(3, *shape))
    loss, mse, kl = vae_loss(x, out, kl_weight=0.1)
    assert loss.item() == pytest.approx(mse.item() + 0.1 * kl.item(), rel=1e-5)
    assert kl.item() >= 0
    # the KL term is exact for a standard normal posterior
    zero = type(out)(out.reconstruction, torch.zeros_like(mean), torch.zeros_like(logvar))
    assert vae_loss(x, zero, kl_weight=1.0)[2].item() == 0.0


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae") / "vae"
    train_vae(tiny(*VAE_TINY, "vae.steps=60", "vae.lr=0.003"), run)
    return run


def test_vae_reconstruction_improves_with_training(vae_run):
    cfg = tiny(*VAE_TINY)
    images = to_model_range(load_data(cfg).images)
    vae, _ = load_vae_run(vae_run)
    torch.manual_seed(cfg.train.seed)
    untrained = VAE(**vae.model_args)  # the same initialisation train_vae started from
    before, after = reconstruction_mse(untrained, images), reconstruction_mse(vae, images)
    assert after < 0.2 * before
    summary = orjson.loads((vae_run / "vae_summary.json").read_bytes())
    assert summary["reconstruction_mse_train"] == pytest.approx(after)
    assert summary["latent_shape"] == [2, 8, 8] and summary["steps"] == 60
    assert (vae_run / "reconstruction.png").stat().st_size > 1000


def latent_cfg(vae_run, *extra):
    return tiny(
        f"latent.vae_run={vae_run}",
        "diffusion.clip_x0=null",
        "model.attention_resolutions=[4]",
        *extra,
    )


def test_latent_cache_is_made_once_and_reused_on_resume(tmp_path, vae_run, monkeypatch):
    calls = []
    encode = LatentSpace.encode
    monkeypatch.setattr(
        LatentSpace, "encode", lambda self, x, *a: calls.append(len(x)) or encode(self, x, *a)
    )
    straight = train_image_model(latent_cfg(vae_run, "train.steps=4"), tmp_path / "straight")
    assert calls == [64]  # the 64 training images, once
    train_image_model(latent_cfg(vae_run, "train.steps=2"), tmp_path / "split")
    cache = tmp_path / "split" / LATENT_FILE
    before = cache.stat().st_mtime_ns, cache.read_bytes()
    resumed = train_image_model(
        latent_cfg(vae_run, "train.steps=4"), tmp_path / "split", resume=True
    )
    assert calls == [64, 64]  # the resumed call read latents.pt back
    assert (cache.stat().st_mtime_ns, cache.read_bytes()) == before
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    latents = torch.load(cache, weights_only=False)["latents"]
    assert latents.shape == (64, 2, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, abs=1e-4)  # scaled to unit variance


def test_resume_refuses_latents_of_another_vae(tmp_path, vae_run):
    train_image_model(latent_cfg(vae_run, "train.steps=2"), tmp_path / "run")
    data = torch.load(tmp_path / "run" / LATENT_FILE, weights_only=False)
    data["vae_fingerprint"] = "another"
    torch.save(data, tmp_path / "run" / LATENT_FILE)
    with pytest.raises(CheckpointError, match="latents of another VAE"):
        train_image_model(latent_cfg(vae_run, "train.steps=4"), tmp_path / "run", resume=True)


def test_latent_text_run_samples_and_decodes_from_its_own_checkpoint(tmp_path, vae_run):
    from arcdiff.image.unet.sample import Sampler, generate
    from arcdiff.image.unet.text import TABLE_FILE, save_table

    (tmp_path / "run").mkdir()
    save_table(tmp_path / "run" / TABLE_FILE, random_table())
    cfg = latent_cfg(vae_run, "train.steps=2", *TEXT, "model.cross_attention_resolutions=[8, 4]")
    train_image_model(cfg, tmp_path / "run")
    copy = tmp_path / "vae_moved"
    vae_run.rename(copy)  # sampling must not need the VAE's run
    try:
        run = load_run(tmp_path / "run")
        assert run.shape == (2, 8, 8) and run.latent is not None and run.clamp is None
        noise = torch.randn(3, *run.shape)
        z = generate(run.ema, run.diffusion, noise, torch.tensor([0, 1, 2]), Sampler("ddim", 3),
                     clamp=run.clamp)  # fmt: skip
        images = run.to_pixels(z)
        assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1
        assert z.abs().max() > 1  # latents are not clamped to the pixel range
        chain = torch.stack([z, z])  # (steps, N, Z, h, w), as the denoising collage holds
        decoded = run.to_pixels(chain)
        assert decoded.shape == (2, 3, 1, 16, 16) and torch.equal(decoded[1], images)
    finally:
        copy.rename(vae_run)


def test_wrong_vae_runs_are_clear_errors(tmp_path, vae_run):
    with pytest.raises(CheckpointError, match=r"latent.vae_run: .*missing is not a VAE run"):
        train_image_model(latent_cfg(tmp_path / "missing", "train.steps=1"), tmp_path / "a")
    unet_run = tmp_path / "unet"
    train_image_model(tiny("train.steps=1"), unet_run)
    with pytest.raises(CheckpointError, match="is not a VAE checkpoint"):
        train_image_model(latent_cfg(unet_run, "train.steps=1"), tmp_path / "b")
    with pytest.raises(
        CheckpointError, match=r"encodes images of shape \(1, 16, 16\).*\(1, 8, 8\)"
    ):
        train_image_model(latent_cfg(vae_run, "train.steps=1", "data.image_size=8"), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_vae_run_is_one_line_on_the_command_line(tmp_path):
    from .test_cli import SETS

    args = ["train", "--out", str(tmp_path / "r"), *SETS,
            "--set", f"latent.vae_run={tmp_path / 'nothing'}"]  # fmt: skip
    line = one_error_line(CliRunner().invoke(image_app, args))
    assert "latent.vae_run" in line and "is not a VAE run" in line
    assert not (tmp_path / "r").exists()
