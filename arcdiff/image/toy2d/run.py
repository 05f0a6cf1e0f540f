"""The 2D toy suite: train the MLP denoiser on each toy dataset, sample, and score.

Metrics per dataset follow the AI-Scientist 2d_diffusion template: ``training_time`` (s),
``eval_loss`` (eps-prediction MSE of the trained, non-EMA model over the whole dataset in
batches of 256 at uniformly drawn training steps, mean of batch means), ``inference_time`` (s to
draw ``eval_samples`` points) and ``kl_divergence`` (kNN estimate, k = 5, bits, real data vs
samples). The hot loop indexes a pre-shuffled tensor: no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arcdiff.image.gaussian import GaussianDiffusion
from arcdiff.image.toy2d.config import Toy2dConfig
from arcdiff.image.toy2d.data import get_dataset
from arcdiff.image.toy2d.metrics import knn_kl_divergence
from arcdiff.image.toy2d.model import MLPDenoiser
from arcdiff.runs.paths import write_json
from arcdiff.train.optim import ema_decay_at, ema_update, warmup_cosine_lr

METRIC_KEYS = ("training_time", "eval_loss", "inference_time", "kl_divergence")
# The published baseline (AI-Scientist templates/2d_diffusion, run_0/final_info.json)
BASELINE_KL = {"circle": 0.339, "dino": 1.042, "line": 0.154, "moons": 0.1005}
Progress = Callable[[str, int, int], None]  # (description, completed, total)


def make_diffusion(cfg: Toy2dConfig) -> GaussianDiffusion:
    return GaussianDiffusion(
        num_timesteps=cfg.num_timesteps,
        schedule=cfg.schedule,  # type: ignore[arg-type]
        prediction=cfg.prediction,  # type: ignore[arg-type]
        zero_terminal_snr=cfg.zero_terminal_snr,
    )


def make_model(cfg: Toy2dConfig, embedding: str) -> MLPDenoiser:
    return MLPDenoiser(
        embedding=embedding,  # type: ignore[arg-type]
        embedding_dim=cfg.embedding_dim,
        hidden_dim=cfg.hidden_dim,
        hidden_layers=cfg.hidden_layers,
        input_scale=cfg.input_scale,
    )


def lr_at(cfg: Toy2dConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 0 at train_steps (the baseline's CosineAnnealingLR)."""
    return warmup_cosine_lr(cfg.lr, step, cfg.warmup_steps, cfg.train_steps)


def train_timesteps(cfg: Toy2dConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """Training steps for a batch: uniform for t_power = 1, tilted to low noise for > 1."""
    if cfg.t_power == 1.0:
        return torch.randint(0, cfg.num_timesteps, (n,), generator=gen)
    u = torch.rand(n, generator=gen) ** cfg.t_power
    return (u * cfg.num_timesteps).long().clamp(max=cfg.num_timesteps - 1)


@dataclass(frozen=True)
class TrainResult:
    model: MLPDenoiser
    ema: MLPDenoiser
    losses: np.ndarray  # (train_steps,) training loss per step
    training_time: float


def train_denoiser(
    cfg: Toy2dConfig,
    data: torch.Tensor,
    embedding: str,
    *,
    progress: Progress | None = None,
    description: str = "",
) -> TrainResult:
    """Train one MLP denoiser on (N, 2) points for cfg.train_steps steps of cfg.batch_size."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    diffusion = make_diffusion(cfg)
    model = make_model(cfg, embedding)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    params = list(model.parameters())
    n = len(data)
    losses = np.empty(cfg.train_steps, dtype=np.float32)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    report_every = max(1, cfg.train_steps // 100)
    start = time.perf_counter()
    for step in range(cfg.train_steps):
        if cursor + cfg.batch_size > n:  # new epoch: reshuffle
            order, cursor = torch.randperm(n, generator=gen), 0
        x0 = data[order[cursor : cursor + cfg.batch_size]]  # (B, 2)
        cursor += cfg.batch_size
        noise = torch.randn(x0.shape, generator=gen)
        t = train_timesteps(cfg, len(x0), gen)
        loss = F.mse_loss(
            model(diffusion.add_noise(x0, noise, t), t), diffusion.target(x0, noise, t)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        optimizer.step()
        if (step + 1) % cfg.ema_every == 0:
            # decay warms up so early EMA weights are not stuck at the initialisation
            updates = (step + 1) // cfg.ema_every
            ema_update(ema, model, ema_decay_at(updates, cfg.ema_decay))
        losses[step] = loss.item()
        if progress is not None and ((step + 1) % report_every == 0 or step + 1 == cfg.train_steps):
            progress(description, step + 1, cfg.train_steps)
    return TrainResult(model, ema, losses, time.perf_counter() - start)


@torch.no_grad()
def eval_loss(cfg: Toy2dConfig, model: MLPDenoiser, data: torch.Tensor) -> float:
    """The baseline's eval_loss: eps MSE over the whole shuffled dataset, mean of batch means."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    diffusion = make_diffusion(cfg)
    model.eval()
    order = torch.randperm(len(data), generator=gen)
    batch_means = []
    for chunk in order.split(cfg.batch_size * 64):
        x0 = data[chunk]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_timesteps, (len(x0),), generator=gen)
        x_t = diffusion.add_noise(x0, noise, t)
        _, eps = diffusion.split(model(x_t, t), x_t, t)
        per_point = ((eps - noise) ** 2).mean(dim=1)  # (chunk,)
        batch_means += [b.mean().item() for b in per_point.split(cfg.batch_size)]
    model.train()
    return float(np.mean(batch_means))


@torch.no_grad()
def draw_samples(
    cfg: Toy2dConfig,
    model: MLPDenoiser,
    num: int,
    *,
    seed: int,
    progress: Progress | None = None,
    description: str = "",
) -> torch.Tensor:
    """``num`` samples from the reverse process with the configured sampler."""
    gen = torch.Generator().manual_seed(seed)
    diffusion = make_diffusion(cfg)
    model.eval()
    x = torch.randn(num, 2, generator=gen)
    steps = diffusion.sample_steps(
        model,
        x,
        num_steps=cfg.sample_steps,
        spacing=cfg.spacing,  # type: ignore[arg-type]
        sampler=cfg.sampler,  # type: ignore[arg-type]
        eta=cfg.eta,
        generator=gen,
    )
    for i, step in enumerate(steps):
        x = step.prev_sample
        if progress is not None:
            progress(description, i + 1, cfg.sample_steps)
    return x


@dataclass(frozen=True)
class DatasetRun:
    metrics: dict[str, float]
    samples: np.ndarray  # (eval_samples, 2)
    losses: np.ndarray  # (train_steps,)
    modulation: np.ndarray | None  # (num_timesteps, embedding_dim / 2) of the EMA model


def run_dataset(
    cfg: Toy2dConfig,
    name: str,
    data: np.ndarray,
    embedding: str,
    *,
    progress: Progress | None = None,
) -> DatasetRun:
    """Train, evaluate and sample one (embedding, dataset) cell of the suite."""
    points = torch.from_numpy(data)
    label = f"{embedding}/{name}"
    trained = train_denoiser(cfg, points, embedding, progress=progress, description=label)
    loss = eval_loss(cfg, trained.model, points)
    start = time.perf_counter()
    samples = draw_samples(
        cfg,
        trained.ema,
        cfg.eval_samples,
        seed=cfg.seed + 2,
        progress=progress,
        description=f"{label} sampling",
    ).numpy()
    inference_time = time.perf_counter() - start
    kl = knn_kl_divergence(data, samples, k=cfg.kl_k)
    table = trained.ema.modulation_table(torch.arange(cfg.num_timesteps))
    return DatasetRun(
        metrics={
            "training_time": trained.training_time,
            "eval_loss": loss,
            "inference_time": inference_time,
            "kl_divergence": kl,
        },
        samples=samples,
        losses=trained.losses,
        modulation=None if table is None else table.numpy(),
    )


def run_toy2d(
    cfg: Toy2dConfig,
    out_dir: Path,
    *,
    dino_tsv: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Run every embedding x dataset; write the run directory; return {embedding: final_info}.

    Layout: config.json, results.json, <embedding>/{final_info.json, samples.npz,
    train_losses.npz, modulation.npz}, samples.png, train_loss.png, modulation.png.
    """
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_toy2d(cfg, out_dir, dino_tsv=dino_tsv, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _run_toy2d(
    cfg: Toy2dConfig,
    out_dir: Path,
    *,
    dino_tsv: str | Path | None,
    progress: Progress | None,
) -> dict[str, dict[str, dict[str, float]]]:
    from arcdiff.image.toy2d import plots  # matplotlib only when a run writes pictures

    data = {name: get_dataset(name, cfg.num_points, dino_tsv=dino_tsv) for name in cfg.datasets}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", cfg.to_dict())
    results: dict[str, dict[str, dict[str, float]]] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    losses: dict[str, dict[str, np.ndarray]] = {}
    modulations: dict[str, dict[str, np.ndarray]] = {}
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for embedding in cfg.embeddings:
        results[embedding], samples[embedding], losses[embedding] = {}, {}, {}
        for name in cfg.datasets:
            run = run_dataset(cfg, name, data[name], embedding, progress=progress)
            results[embedding][name] = run.metrics
            samples[embedding][name] = run.samples
            losses[embedding][name] = run.losses
            if run.modulation is not None:
                modulations.setdefault(embedding, {})[name] = run.modulation
        sub = out_dir / embedding
        write_json(sub / "final_info.json", results[embedding])
        np.savez_compressed(sub / "samples.npz", **samples[embedding])
        np.savez_compressed(sub / "train_losses.npz", **losses[embedding])
        if embedding in modulations:
            np.savez_compressed(sub / "modulation.npz", **modulations[embedding])
    # CPU seconds beside wall seconds: on a shared machine the wall clock includes waiting
    timing = {
        "wall_time": time.perf_counter() - wall_start,
        "cpu_time": time.process_time() - cpu_start,
    }
    write_json(out_dir / "results.json", {**timing, "final_info": results})
    plots.samples_grid(out_dir / "samples.png", data, samples)
    plots.loss_curves(out_dir / "train_loss.png", losses)
    if modulations:
        plots.modulation_heatmaps(out_dir / "modulation.png", modulations)
    return results
