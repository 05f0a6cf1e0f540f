"""Train the image U-Net: AdamW, warmup + cosine LR, gradient accumulation, EMA, bf16 on CUDA.

The loop reads top to bottom: draw a batch (labels dropped to the null class with probability
``label_dropout`` for classifier-free guidance), noise it at uniform training steps, regress the
diffusion target, step, update the EMA, log, checkpoint. Checkpoints go through
arcdiff/runs/checkpoint.py (atomic, strict, resumable) and hold the U-Net's arguments, so
``load_run`` rebuilds the model from the file alone.

Run directory: config.json, metrics.jsonl, checkpoints/{last,final}.pt, train_summary.json.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcdiff.errors import CheckpointError
from arcdiff.image.gaussian import GaussianDiffusion
from arcdiff.image.unet.config import ImageConfig, image_config_from_dict
from arcdiff.image.unet.data import ImageSet, load_images
from arcdiff.image.unet.model import UNet, count_parameters
from arcdiff.runs.checkpoint import (
    checkpoint_state,
    first_difference,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.runs.device import cuda_rng_state, restore_cuda_rng, seeded_generator
from arcdiff.runs.paths import read_metrics, select_device, write_json
from arcdiff.train.optim import ema_decay_at, ema_update, warmup_cosine_lr

CHECKPOINT_KIND = "arcdiff.image.unet"
# train fields that may change on --resume; everything else must match the checkpoint
RESUMABLE_TRAIN_FIELDS = ("steps", "save_every", "log_every", "threads", "device")
Progress = Callable[[str, int, int], None]  # (description, completed, total)


def load_data(cfg: ImageConfig, split: str = "train") -> ImageSet:
    d = cfg.data
    limit = d.limit if split == "train" else None
    return load_images(d.dataset, root=d.root, split=split, image_size=d.image_size, limit=limit)


def to_model_range(images: np.ndarray) -> Tensor:
    """[0, 1] numpy images -> [-1, 1] tensor."""
    return torch.from_numpy(images) * 2 - 1


def model_args(cfg: ImageConfig, data: ImageSet) -> dict[str, Any]:
    """The U-Net's constructor arguments: the model section plus what the data decides."""
    m = cfg.model
    return {
        "in_channels": data.channels,
        "image_size": data.image_size,
        "base_channels": m.base_channels,
        "channel_mults": list(m.channel_mults),
        "num_res_blocks": m.num_res_blocks,
        "attention_resolutions": list(m.attention_resolutions),
        "num_heads": m.num_heads,
        "groups": m.groups,
        "dropout": m.dropout,
        "num_classes": data.num_classes if m.class_conditional else 0,
    }


def make_diffusion(cfg: ImageConfig) -> GaussianDiffusion:
    d = cfg.diffusion
    return GaussianDiffusion(
        num_timesteps=d.num_timesteps,
        schedule=d.schedule,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        prediction=d.prediction,
        zero_terminal_snr=d.zero_terminal_snr,
        clip_x0=d.clip_x0,
    )


def lr_at(cfg: ImageConfig, step: int) -> float:
    """Linear warmup to train.lr, then cosine decay to 0 at train.steps."""
    t = cfg.train
    return warmup_cosine_lr(t.lr, step, t.warmup_steps, t.steps)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch intra-op threads set to ``n`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Run:
    """A trained (or loaded) image model with everything needed to sample from it."""

    cfg: ImageConfig
    model: UNet
    ema: UNet
    diffusion: GaussianDiffusion
    class_names: list[str]
    step: int


def image_checkpoint(
    run: Run, optimizer: torch.optim.Optimizer, gen: torch.Generator, args: dict[str, Any]
) -> dict[str, Any]:
    """runs/checkpoint.py's layout plus the image track's kind, optimizer, RNGs and classes."""
    return checkpoint_state(
        model=run.model,
        ema=run.ema,
        config=run.cfg.to_dict(),
        step=run.step,
        model_args=args,
        kind=CHECKPOINT_KIND,
        optimizer=optimizer.state_dict(),
        rng={
            "batches": gen.get_state(),
            "torch": torch.get_rng_state(),
            **cuda_rng_state(next(run.model.parameters()).device),  # dropout on CUDA
        },
        class_names=run.class_names,
    )


def check_image_checkpoint(state: dict[str, Any], where: str) -> None:
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{where}: not an image U-Net checkpoint (kind {state.get('kind')!r}); "
            "arcdiff image commands read runs written by `arcdiff image train`"
        )


def check_resumable(state: dict[str, Any], cfg: ImageConfig, where: str) -> None:
    saved, now = state["config"], cfg.to_dict()
    for section in ("data", "model", "diffusion", "train"):
        a, b = dict(saved.get(section, {})), dict(now[section])
        if section == "train":
            for key in RESUMABLE_TRAIN_FIELDS:
                a.pop(key, None)
                b.pop(key, None)
        diff = first_difference(a, b, f"{section}.")
        if diff:
            raise CheckpointError(f"{where}: config differs from the checkpoint's: {diff}")


def load_run(run_dir: Path, *, checkpoint: str = "final", device: str | None = None) -> Run:
    """Rebuild model, EMA and diffusion from ``run_dir/checkpoints/<checkpoint>.pt``.

    They go to ``device``, else the run's train.device, else CUDA when there is one.
    """
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "final" and not path.is_file():
        path = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    check_image_checkpoint(state, str(path))
    cfg = image_config_from_dict(state["config"], str(path))
    model, ema = UNet(**state["model_args"]), UNet(**state["model_args"])
    load_state_strict(model, state["model"], f"{path} (model)")
    load_state_strict(ema, state["ema"], f"{path} (ema)")
    target = select_device(device or cfg.train.device)
    return Run(
        cfg,
        model.to(target).eval(),
        ema.to(target).eval(),
        make_diffusion(cfg).to(target),
        state["class_names"],
        state["step"],
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
    args = model_args(cfg, data)
    model = UNet(**args).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    run = Run(cfg, model, ema, make_diffusion(cfg).to(device), data.class_names, step=0)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay}],
        lr=t.lr,
        weight_decay=0.0,
        fused=device.type == "cuda",
    )
    ckpt_dir = run_dir / "checkpoints"
    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt")
        where = str(ckpt_dir / "last.pt")
        check_image_checkpoint(state, where)
        check_resumable(state, cfg, where)
        load_state_strict(model, state["model"], f"{where} (model)")
        load_state_strict(run.ema, state["ema"], f"{where} (ema)")
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"]["batches"])
        torch.set_rng_state(state["rng"]["torch"])
        restore_cuda_rng(state["rng"], device)
        run.step = state["step"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    metrics_path = run_dir / "metrics.jsonl"
    if not resume and metrics_path.exists():
        metrics_path.unlink()

    images = to_model_range(data.images).to(device)  # (N, C, H, W)
    labels = torch.from_numpy(data.labels).to(device)
    null_class = data.num_classes
    params = list(model.parameters())
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and t.bf16
        else nullcontext()
    )
    model.train()
    window: list[float] = []
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    start_step = run.step
    for step in range(start_step, t.steps):
        total = 0.0
        for _ in range(t.grad_accum):
            idx = torch.randint(0, len(images), (t.batch_size,), generator=gen, device=device)
            x0, y = images[idx], labels[idx]
            drop = torch.rand(len(y), generator=gen, device=device) < t.label_dropout
            y = torch.where(drop, torch.full_like(y, null_class), y)
            steps = torch.randint(
                0, cfg.diffusion.num_timesteps, (len(y),), generator=gen, device=device
            )
            noise = torch.randn(x0.shape, generator=gen, device=device)
            x_t = run.diffusion.add_noise(x0, noise, steps)
            with autocast:
                out = model(x_t, steps, y if args["num_classes"] else None)
            loss = F.mse_loss(out.float(), run.diffusion.target(x0, noise, steps))
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
            with metrics_path.open("ab") as f:
                f.write(orjson.dumps(row) + b"\n")
            window = []
        if run.step % t.save_every == 0:
            save_checkpoint(ckpt_dir / "last.pt", image_checkpoint(run, optimizer, gen, args))
        if progress is not None:
            progress("training", run.step, t.steps)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    state = image_checkpoint(run, optimizer, gen, args)
    save_checkpoint(ckpt_dir / "last.pt", state)
    save_checkpoint(ckpt_dir / "final.pt", state)
    rows = read_metrics(run_dir)
    write_json(
        run_dir / "train_summary.json",
        {
            "parameters": count_parameters(model),
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
    model.eval()
    run.ema.eval()
    return run
