"""Train the image U-Net: AdamW, warmup + cosine LR, gradient accumulation, EMA, bf16 on CUDA.

The loop reads top to bottom: draw a batch (labels dropped to the null class with probability
``label_dropout`` for classifier-free guidance), noise it at uniform training steps, regress the
diffusion target, step, update the EMA, log, checkpoint. Checkpoints go through
arcdiff/runs/checkpoint.py (atomic, strict, resumable) and hold the U-Net's arguments, so
``load_run`` (run.py) rebuilds the model from the file alone. A text-conditioned run drops
labels to the empty prompt instead; a latent run denoises the VAE latents of its images.

Run directory: config.json, metrics.jsonl, checkpoints/{last,final}.pt, train_summary.json, and
text_context.pt (the prompt table) and latents.pt (the encoded dataset) when the run has them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcdiff.image.unet.config import ImageConfig
from arcdiff.image.unet.data import ImageSet
from arcdiff.image.unet.latent import LatentSpace, latents_for_run
from arcdiff.image.unet.model import count_parameters
from arcdiff.image.unet.run import (
    Run,
    build_unet,
    check_image_checkpoint,
    check_resumable,
    image_checkpoint,
    load_data,
    make_diffusion,
    model_args,
    to_model_range,
)
from arcdiff.image.unet.text import ContextTable, context_for_run, prompts_for
from arcdiff.runs.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from arcdiff.runs.device import restore_cuda_rng, seeded_generator
from arcdiff.runs.metrics import MetricsWriter
from arcdiff.runs.paths import checkpoints_dir, read_metrics, select_device, write_json
from arcdiff.train.optim import ema_decay_at, ema_update, warmup_cosine_lr

Progress = Callable[[str, int, int], None]  # (description, completed, total)


def lr_at(cfg: ImageConfig, step: int) -> float:
    """Linear warmup to train.lr, then cosine decay to 0 at train.steps."""
    t = cfg.train
    return warmup_cosine_lr(t.lr, step, t.warmup_steps, t.steps)


def model_space_data(
    cfg: ImageConfig, run_dir: Path, data: ImageSet, *, resume: bool
) -> tuple[Tensor, ContextTable | None, LatentSpace | None]:
    """(training images in model space, prompt table, latent space) of a run.

    The prompts are encoded once (text_context.pt in the run), the latents too (latents.pt):
    a resumed run reads both back instead of needing the encoder or encoding again.
    """
    images, latent = to_model_range(data.images), None
    if cfg.latent.vae_run is not None:
        latent, images = latents_for_run(cfg.latent.vae_run, run_dir, images, resume=resume)
    context = None
    if cfg.model.text_conditional:
        prompts = prompts_for(cfg.text.prompt, data.class_names)
        context = context_for_run(run_dir, prompts, cfg.text.encoder)
    return images, context, latent


def _optimizer(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW; matrices decay, biases and norms do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay}],
        lr=lr,
        weight_decay=0.0,
        fused=device.type == "cuda",
    )


def _restore(
    state: dict[str, Any],
    where: str,
    run: Run,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    device: torch.device,
) -> None:
    """Weights, EMA, optimizer, random states and step from a checkpoint (last.pt)."""
    load_state_strict(run.model, state["model"], f"{where} (model)")
    load_state_strict(run.ema, state["ema"], f"{where} (ema)")
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["batches"])
    torch.set_rng_state(state["rng"]["torch"])
    restore_cuda_rng(state["rng"], device)
    run.step = state["step"]


def _autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on CUDA when asked, nothing elsewhere."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _micro_batch_loss(
    run: Run,
    images: Tensor,
    labels: Tensor,
    null_class: int,
    gen: torch.Generator,
    autocast: AbstractContextManager,
    args: dict[str, Any],
) -> Tensor:
    """The diffusion loss of one micro-batch drawn from ``gen``: labels dropped to the null
    class with probability ``label_dropout``, noised at uniform steps."""
    t, device = run.cfg.train, images.device
    idx = torch.randint(0, len(images), (t.batch_size,), generator=gen, device=device)
    x0, y = images[idx], labels[idx]
    drop = torch.rand(len(y), generator=gen, device=device) < t.label_dropout
    y = torch.where(drop, torch.full_like(y, null_class), y)
    steps = torch.randint(
        0, run.cfg.diffusion.num_timesteps, (len(y),), generator=gen, device=device
    )
    noise = torch.randn(x0.shape, generator=gen, device=device)
    x_t = run.diffusion.add_noise(x0, noise, steps)
    with autocast:
        out = run.model(x_t, steps, y if args["num_classes"] else None)
    return F.mse_loss(out.float(), run.diffusion.target(x0, noise, steps))


def _write_summary(
    run: Run, run_dir: Path, start_step: int, wall: float, cpu: float, device: torch.device
) -> None:
    t = run.cfg.train
    rows = read_metrics(run_dir)
    write_json(
        run_dir / "train_summary.json",
        {
            "parameters": count_parameters(run.model),
            "steps": run.step,
            "steps_this_call": run.step - start_step,
            "images_seen": run.step * t.batch_size * t.grad_accum,
            "wall_s": wall,
            "cpu_s": cpu,
            "final_loss": rows[-1]["loss"] if rows else None,
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
    )


def train_image_model(
    cfg: ImageConfig, run_dir: Path, *, resume: bool = False, progress: Progress | None = None
) -> Run:
    """Train for cfg.train.steps optimizer steps (continuing last.pt with ``resume``)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    device = select_device(t.device)
    gen = seeded_generator(device, t.seed)  # batches, label dropout, steps and noise
    data = load_data(cfg)
    ckpt_dir = checkpoints_dir(run_dir)
    where, state = str(ckpt_dir / "last.pt"), None
    if resume:  # a mismatch fails before any prompt or image is encoded
        state = load_checkpoint(ckpt_dir / "last.pt")
        check_image_checkpoint(state, where)
        check_resumable(state, cfg, where)
    images, context, latent = model_space_data(cfg, run_dir, data, resume=resume)
    args = model_args(
        cfg, channels=images.shape[1], image_size=images.shape[2], num_classes=data.num_classes
    )
    model = build_unet(args, context).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    run = Run(cfg, model, ema, make_diffusion(cfg).to(device), data.class_names, 0, context, latent)
    optimizer = _optimizer(model, t.lr, t.weight_decay, device)
    if state is not None:
        _restore(state, where, run, optimizer, gen, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    metrics = MetricsWriter(run_dir)
    if not resume:
        metrics.restart()

    images = images.to(device)  # (N, C, H, W): pixels in [-1, 1], or scaled latents
    labels = torch.from_numpy(data.labels).to(device)
    null_class = data.num_classes
    params = list(model.parameters())
    autocast = _autocast(device, t.bf16)
    model.train()
    window: list[float] = []
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    start_step = run.step
    for step in range(start_step, t.steps):
        total = 0.0
        for _ in range(t.grad_accum):
            loss = _micro_batch_loss(run, images, labels, null_class, gen, autocast, args)
            (loss / t.grad_accum).backward()
            total += loss.item() / t.grad_accum
        grad_norm = nn.utils.clip_grad_norm_(params, t.grad_clip)
        lr = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # EMA whose decay warms up, so early averages are not stuck at the initialisation
        ema_update(run.ema, model, ema_decay_at(step, t.ema_decay))
        run.step = step + 1
        window.append(total)
        if run.step % t.log_every == 0 or run.step == t.steps:
            row = {
                "step": run.step,
                "loss": float(np.mean(window)),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "wall_s": time.perf_counter() - wall_start,
            }
            metrics.append(row)
            window = []
        if run.step % t.save_every == 0:
            save_checkpoint(ckpt_dir / "last.pt", image_checkpoint(run, optimizer, gen, args))
        if progress is not None:
            progress("training", run.step, t.steps)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    state = image_checkpoint(run, optimizer, gen, args)
    save_checkpoint(ckpt_dir / "last.pt", state)
    save_checkpoint(ckpt_dir / "final.pt", state)
    _write_summary(run, run_dir, start_step, wall, cpu, device)
    model.eval()
    run.ema.eval()
    return run
