"""``arcdiff image vae``: train the VAE of a latent model, measure and draw its reconstructions.

The VAE trains on the run's pixel images (the data section) with the vae section's recipe:
AdamW, warmup + cosine LR, one reparameterised sample per image. It keeps no EMA (a short,
deterministic-enough fit; the checkpoint's ``ema`` entry holds the same weights).

Run directory: config.json, metrics.jsonl, checkpoints/final.pt, vae_summary.json,
reconstruction.png (held-out images over their reconstructions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from arcdiff.image.unet import plots
from arcdiff.image.unet.config import ImageConfig
from arcdiff.image.unet.data import ImageSet
from arcdiff.image.unet.latent import VAE_KIND
from arcdiff.image.unet.model import count_parameters
from arcdiff.image.unet.run import load_data, to_model_range
from arcdiff.image.unet.vae import VAE, vae_loss
from arcdiff.runs.checkpoint import checkpoint_state, save_checkpoint
from arcdiff.runs.metrics import MetricsWriter
from arcdiff.runs.paths import checkpoint_path, write_json
from arcdiff.train.optim import warmup_cosine_lr

Progress = Callable[[str, int, int], None]


def vae_args(cfg: ImageConfig, data: ImageSet) -> dict[str, Any]:
    v = cfg.vae
    return {
        "in_channels": data.channels,
        "image_size": data.image_size,
        "base_channels": v.base_channels,
        "channel_mults": list(v.channel_mults),
        "latent_channels": v.latent_channels,
        "groups": v.groups,
    }


@torch.no_grad()
def reconstruction_mse(vae: VAE, images: torch.Tensor, batch: int = 500) -> float:
    """Mean per-pixel squared error of decode(posterior mean), images in [-1, 1]."""
    total = 0.0
    for chunk in images.split(batch):
        recon = vae(chunk).reconstruction.clamp(-1, 1)
        total += ((recon - chunk) ** 2).sum().item()
    return total / images.numel()


def train_vae(cfg: ImageConfig, run_dir: Path, *, progress: Progress | None = None) -> VAE:
    """Fit cfg.vae on the training images; write the run directory described above."""
    v, t = cfg.vae, cfg.train
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    data = load_data(cfg, "train")
    images, test = to_model_range(data.images), to_model_range(load_data(cfg, "test").images)
    args = vae_args(cfg, data)
    vae = VAE(**args)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=v.lr)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    metrics = MetricsWriter(run_dir)
    metrics.restart()
    wall, cpu = time.perf_counter(), time.process_time()
    vae.train()
    for step in range(v.steps):
        x = images[torch.randint(0, len(images), (v.batch_size,), generator=gen)]
        noise = torch.randn((len(x), *vae.latent_shape), generator=gen)
        loss, mse, kl = vae_loss(x, vae(x, noise), v.kl_weight)
        lr = warmup_cosine_lr(v.lr, step, v.warmup_steps, v.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % t.log_every == 0 or step + 1 == v.steps:
            row = {"step": step + 1, "loss": loss.item(), "mse": mse.item(), "kl": kl.item()}
            metrics.append(row)
        if progress is not None:
            progress("vae", step + 1, v.steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    vae.eval()
    state = checkpoint_state(
        model=vae, ema=vae, config=cfg.to_dict(), step=v.steps, model_args=args, kind=VAE_KIND
    )
    save_checkpoint(checkpoint_path(run_dir, "final"), state)
    summary = {
        "parameters": count_parameters(vae),
        "steps": v.steps,
        "latent_shape": list(vae.latent_shape),
        "reconstruction_mse_train": reconstruction_mse(vae, images),
        "reconstruction_mse_test": reconstruction_mse(vae, test),
        "mse_scale": "per pixel, images in [-1, 1]",
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": torch.get_num_threads(),
    }
    write_json(run_dir / "vae_summary.json", summary)
    with torch.no_grad():
        shown = test[:10]
        recon = vae(shown).reconstruction.clamp(-1, 1)
    plots.image_grid(
        run_dir / "reconstruction.png",
        [("held-out", shown.numpy()), ("decoded", recon.numpy())],
        title=f"VAE {vae.latent_shape} latents: test MSE {summary['reconstruction_mse_test']:.4f}",
    )
    return vae
