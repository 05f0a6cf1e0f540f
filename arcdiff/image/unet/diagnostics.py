"""The pictures researchers look at after training an image diffusion model, as PNGs.

All from the EMA model with fixed seeds, so two runs' figures compare cell by cell:

- samples.png: one row per class (same noise per column) and one unconditional row;
- loss_per_t.png: held-out diffusion loss per timestep bucket;
- train_loss.png: the training curve from metrics.jsonl;
- denoising.png: x_t and predicted x_0 along the sampling chain;
- reconstruction.png: real images noised to several t and brought back by DDIM;
- interpolation.png: samples along a spherical interpolation between two noises;
- alignment.png (conditional models): samples of every class, each class from noise of its own
  seed, with the metric classifier's accuracy per class (alignment.py).

A latent run's samples, chains and reconstructions are decoded to pixels by its VAE before they
are drawn or scored. Numbers behind the figures go to diagnostics.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arcdiff.image.unet import plots
from arcdiff.image.unet.alignment import metric_classifier, run_alignment
from arcdiff.image.unet.run import Run, load_data, to_model_range
from arcdiff.image.unet.sample import (
    Sampler,
    denoising_trajectory,
    device_of,
    draw,
    reconstruct,
    slerp,
)
from arcdiff.runs.paths import read_metrics, write_json

Progress = Callable[[str, int, int], None]
RECONSTRUCT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def sampler_of(run: Run) -> Sampler:
    s = run.cfg.sample
    return Sampler(sampler=s.sampler, num_steps=s.num_steps, eta=s.eta, spacing=s.spacing)


def _noise(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def sample_grid(run: Run, path: Path, *, guidance_scale: float) -> None:
    """Rows: each class, then unconditional; column j uses the same noise in every row."""
    s = run.cfg.sample
    shape = image_shape(run)
    noise = _noise(s.per_class, shape, s.seed)
    rows: list[tuple[str, np.ndarray]] = []
    if run.ema.num_classes:
        k = run.ema.num_classes
        labels = torch.arange(k).repeat_interleave(s.per_class)
        samples = draw(
            run,
            noise.repeat(k, 1, 1, 1),
            labels,
            sampler_of(run),
            guidance_scale=guidance_scale,
            seed=s.seed,
        )
        for c, per_class in enumerate(samples.split(s.per_class)):
            rows.append((run.class_names[c], per_class.numpy()))
    uncond = draw(run, noise, None, sampler_of(run), seed=s.seed)
    rows.append(("uncond.", uncond.numpy()))
    how = sampler_of(run)
    title = (
        f"{run.cfg.name}: EMA, {how.sampler} {how.num_steps} steps, "
        f"guidance {guidance_scale:g}, seed {s.seed}"
    )
    plots.image_grid(path, rows, title=title)


def image_shape(run: Run) -> tuple[int, int, int]:
    """Shape of one sample in the model's space (a latent run's: the latents')."""
    return run.shape


@torch.no_grad()
def loss_per_bucket(
    run: Run, images: torch.Tensor, labels: torch.Tensor, *, buckets: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean held-out training loss in ``buckets`` equal ranges of t: (centres, losses)."""
    gen = torch.Generator().manual_seed(seed)
    diffusion, model = run.diffusion, run.ema
    device = device_of(model)
    images, labels = images.to(device), labels.to(device)
    T = diffusion.num_timesteps
    edges = np.linspace(0, T, buckets + 1).astype(int)
    y = labels if model.num_classes else None
    losses = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        t = torch.randint(int(lo), int(hi), (len(images),), generator=gen).to(device)
        noise = torch.randn(images.shape, generator=gen).to(device)
        x_t = diffusion.add_noise(images, noise, t)
        err = (model(x_t, t, y) - diffusion.target(images, noise, t)) ** 2
        losses.append(err.mean().item())
    return (edges[:-1] + edges[1:]) / 2, np.array(losses)


def _denoising_figure(run: Run, out_dir: Path) -> None:
    """x_t and the predicted x_0 along one chain per class (or per noise draw)."""
    s = run.cfg.sample
    n_show = min(4, run.ema.num_classes or 4)
    labels = torch.arange(n_show) if run.ema.num_classes else None
    kept, xs, x0s = denoising_trajectory(
        run.ema,
        run.diffusion,
        _noise(n_show, image_shape(run), s.seed + 1),
        labels,
        sampler_of(run),
        guidance_scale=s.guidance_scale,
        seed=s.seed,
        clamp=run.clamp,
    )
    xs, x0s = run.to_pixels(xs), run.to_pixels(x0s)  # (keep, N, C, H, W) images
    collage = []
    for i in range(n_show):
        name = run.class_names[i] if labels is not None else f"#{i}"
        collage.append((f"{name}: x_t", xs[:, i].numpy()))
        collage.append((f"{name}: x0", x0s[:, i].numpy()))
    plots.image_grid(
        out_dir / "denoising.png",
        collage,
        title="x_t and predicted x_0 along the chain (t above each column)",
        column_labels=[f"t={t}" for t in kept],
    )


def _reconstruction_figure(
    run: Run, out_dir: Path, held_out: torch.Tensor, held_labels: torch.Tensor
) -> dict[str, float]:
    """Held-out images noised to a step and brought back; the MSE per starting step."""
    s = run.cfg.sample
    originals = held_out[:8]
    recon_rows = [("original", originals.numpy())]
    recon_mse = {}
    T = run.diffusion.num_timesteps
    for fraction in RECONSTRUCT_FRACTIONS:
        t_start = int(fraction * (T - 1))
        x_t, recon = reconstruct(
            run.ema,
            run.diffusion,
            run.to_model_space(originals),
            held_labels[:8] if run.ema.num_classes else None,
            t_start,
            num_steps=s.num_steps,
            seed=s.seed,
            clamp=run.clamp,
        )
        x_t, recon = run.to_pixels(x_t), run.to_pixels(recon)
        recon_mse[str(t_start)] = ((recon - originals) ** 2).mean().item()
        recon_rows += [(f"x_t t={t_start}", x_t.numpy()), (f"recon t={t_start}", recon.numpy())]
    plots.image_grid(
        out_dir / "reconstruction.png",
        recon_rows,
        title="held-out images noised to step t, then DDIM (eta 0) back to t = 0",
    )
    return recon_mse


def _interpolation_figure(run: Run, out_dir: Path) -> None:
    """DDIM from points on the great circle between two noise draws, per class."""
    s = run.cfg.sample
    z = _noise(2, image_shape(run), s.seed + 2)
    alphas = torch.linspace(0, 1, 9)
    path_noise = slerp(z[0], z[1], alphas)
    interp_rows = []
    classes = range(min(4, run.ema.num_classes)) if run.ema.num_classes else [None]
    for c in classes:
        y = None if c is None else torch.full((len(alphas),), c)
        how = Sampler("ddim", s.num_steps, 0.0, s.spacing)
        images = draw(run, path_noise, y, how, guidance_scale=s.guidance_scale)
        name = "uncond." if c is None else run.class_names[c]
        interp_rows.append((name, images.numpy()))
    plots.image_grid(
        out_dir / "interpolation.png",
        interp_rows,
        title="DDIM (eta 0) from slerp(z0, z1, alpha)",
        column_labels=[f"{a:.2f}" for a in alphas.tolist()],
    )


def write_diagnostics(run: Run, out_dir: Path, *, progress: Progress | None = None) -> dict:
    """All the figures above into ``out_dir``; returns what diagnostics.json holds."""
    cfg, s = run.cfg, run.cfg.sample
    total = 7 if run.ema.num_classes else 6
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress("diagnostics", done, total)

    sample_grid(run, out_dir / "samples.png", guidance_scale=s.guidance_scale)
    tick()

    test = load_data(cfg, "test")
    n_held = cfg.eval.num_samples  # held-out images for the loss and the reconstructions
    held_out = to_model_range(test.images[:n_held])
    held_labels = torch.from_numpy(test.labels[:n_held])
    centres, losses = loss_per_bucket(run, run.to_model_space(held_out), held_labels, seed=s.seed)
    label = f"held-out {cfg.diffusion.prediction}-MSE (EMA)"
    plots.loss_per_timestep(out_dir / "loss_per_t.png", centres, losses, label)
    tick()

    rows = read_metrics(out_dir)
    if rows:
        plots.training_curve(
            out_dir / "train_loss.png",
            np.array([r["step"] for r in rows]),
            np.array([r["loss"] for r in rows]),
        )
    tick()
    _denoising_figure(run, out_dir)
    tick()
    recon_mse = _reconstruction_figure(run, out_dir, held_out, held_labels)
    tick()
    _interpolation_figure(run, out_dir)
    tick()

    summary: dict[str, Any] = {
        "loss_per_t": {"bucket_centres": centres.tolist(), "loss": losses.tolist()},
        "reconstruction_mse": recon_mse,
        "figures": [
            "samples.png",
            "loss_per_t.png",
            "train_loss.png",
            "denoising.png",
            "reconstruction.png",
            "interpolation.png",
        ],
    }
    if run.ema.num_classes:
        summary["class_alignment"] = run_alignment(
            run, metric_classifier(run, out_dir), figure=out_dir / "alignment.png"
        )
        summary["figures"].append("alignment.png")
        tick()
    write_json(out_dir / "diagnostics.json", summary)
    return summary
