"""The training loop: read top to bottom as evaluate and checkpoint, step, log.

AdamW (fused on CUDA), linear warmup then cosine or constant LR, gradient clipping and
accumulation, bf16 autocast on CUDA, EMA of the weights, periodic validation on held-out
demonstration pairs, atomic checkpoints that resume exactly, metrics.jsonl (+ wandb), and
DistributedDataParallel under torchrun (only rank 0 logs and writes checkpoints).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import arcdiff
from arcdiff.config import Config, config_from_dict, config_to_dict, save_config
from arcdiff.data.dataset import Batch, stream_from_config
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, TrainingError
from arcdiff.model.denoiser import Denoiser, DenoiserOutput
from arcdiff.train.checkpoint import (
    first_difference,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.train.logging import MetricsLogger

NUM_NOISE_BUCKETS = 5
MAX_BAD_STEPS = 5  # consecutive non-finite steps before training stops
# Sections a resumed run must share with its checkpoint (train and eval may change).
FROZEN_SECTIONS = ("data", "model", "diffusion")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    model: Denoiser
    ema: Denoiser
    stop_reason: str  # "max_steps", "max_minutes" or "until_step"
    skipped_steps: int
    val: dict[str, float]


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given, else cuda, then mps, then cpu."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def code_version() -> str:
    """arcdiff's version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(arcdiff.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{arcdiff.__version__}+{sha}" if sha else arcdiff.__version__


def lr_factor(step: int, cfg: Config, budget_used: float = 0.0) -> float:
    """Linear warmup to 1, then cosine to 0.1, or constant.

    The cosine follows whichever runs out first: the steps (``step / max_steps``) or the time
    budget (``budget_used``, the fraction of ``max_minutes`` spent), so a run stopped by the
    clock still anneals its learning rate.
    """
    t = cfg.train
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    by_steps = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    progress = min(1.0, max(by_steps, budget_used))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA with warm-up: the decay grows as (1 + step) / (10 + step) up to ``decay``."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - d)


def build_model(cfg: Config, num_tasks: int) -> Denoiser:
    return Denoiser.from_config(cfg.model, num_tasks=num_tasks, max_size=cfg.data.max_size)


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, biases, norms and gates do not (as nanoGPT)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.95), fused=fused)


def denoise_pass(
    model: nn.Module,
    batch: Batch,
    x_t: Tensor,
    logsnr: Tensor,
    valid: Tensor,
    self_condition: bool,
):
    """One training/validation prediction; with self-conditioning, a no-grad first pass."""
    args = (batch.inputs, x_t, logsnr, batch.task, batch.dihedral)
    sc_logits = None
    if self_condition:
        with torch.no_grad():
            sc_logits = model(*args).logits.detach()
    return model(*args, sc_logits=sc_logits, valid=valid)


def diffusion_loss(
    model: nn.Module,
    batch: Batch,
    diffusion: DiscreteDiffusion,
    steps: Tensor,
    generator: torch.Generator,
    size_loss_weight: float,
    self_condition: bool,
) -> tuple[Tensor, dict[str, Tensor], DenoiserOutput]:
    """Corrupt the batch's outputs at ``steps`` (noise drawn on the CPU), denoise, score."""
    x0, valid = batch.outputs, batch.outputs != PAD
    x_t = diffusion.corrupt(x0.cpu(), steps, valid.cpu(), generator).to(x0.device)
    logsnr = diffusion.logsnr(steps).to(x0.device)
    pred = denoise_pass(model, batch, x_t, logsnr, valid, self_condition)
    loss, parts = diffusion.loss(
        pred.logits, pred.size_logits, x0, batch.output_sizes, valid, size_loss_weight
    )
    return loss, parts, pred


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(**{k: v.to(device, non_blocking=True) for k, v in vars(batch).items()})


@torch.no_grad()
def validate(
    model: Denoiser, batch: Batch, diffusion: DiscreteDiffusion, cfg: Config, device: torch.device
) -> dict[str, float]:
    """Loss and cell accuracy on held-out pairs, per noise bucket (fixed noise, deterministic)."""
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    batch = _to(batch, device)
    x0, valid = batch.outputs, batch.outputs != PAD
    n, t_max = len(batch), diffusion.num_timesteps
    out: dict[str, float] = {}
    losses, accs = [], []
    for k in range(NUM_NOISE_BUCKETS):
        lo, hi = k * t_max // NUM_NOISE_BUCKETS, (k + 1) * t_max // NUM_NOISE_BUCKETS
        steps = torch.randint(lo, max(hi, lo + 1), (n,), generator=gen)
        loss, _, pred = diffusion_loss(
            model,
            batch,
            diffusion,
            steps,
            gen,
            cfg.diffusion.size_loss_weight,
            model.self_condition,
        )
        correct = (pred.logits.argmax(-1) == x0) & valid
        acc = (correct.sum() / valid.sum()).item()
        out[f"val_loss_b{k}"], out[f"val_acc_b{k}"] = loss.item(), acc
        losses.append(loss.item())
        accs.append(acc)
    out["val_loss"], out["val_acc"] = float(np.mean(losses)), float(np.mean(accs))
    return out


class _Distributed:
    """torchrun's environment: rank, world size, and the process group when world > 1."""

    def __init__(self, device: torch.device | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if device is None:
            device = select_device()
            if device.type == "cuda" and self.enabled:
                device = torch.device("cuda", local)
        self.device = device
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_same(self, value: float) -> float:
        """The mean of a scalar over ranks (identity on one process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / self.world

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _check_resumable(state: dict[str, Any], cfg: Config, task_ids: list[str], where: str) -> None:
    saved = state["config"]
    now = config_to_dict(cfg)
    for section in FROZEN_SECTIONS:
        diff = first_difference(saved.get(section, {}), now[section], f"{section}.")
        if diff:
            raise CheckpointError(f"{where}: config differs from the checkpoint's: {diff}")
    if state.get("task_ids") != task_ids:
        raise CheckpointError(f"{where}: the checkpoint was trained on other tasks")


def train(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    device: torch.device | None = None,
    until_step: int | None = None,
    progress: bool = True,
    console: Console | None = None,
    on_eval: Callable[[Denoiser, int], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train a denoiser as ``cfg`` says, writing the run directory ``run_dir``.

    ``resume`` continues from ``run_dir/checkpoints/last.pt`` exactly (same batches, noise and
    optimizer state). ``until_step`` stops early at that step, saving ``last.pt`` only, as an
    interrupted run would. ``on_eval(ema_model, step)``, if given, runs on the main process
    every ``train.quick_eval_every`` steps and its metrics are logged (a quick score).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ddp = _Distributed(device)
    device = ddp.device
    console = console or Console()
    ckpt_dir = run_dir / "checkpoints"
    try:
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        random.seed(cfg.train.seed)
        stream = stream_from_config(cfg.data, rank=ddp.rank, world_size=ddp.world)
        diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
        model = build_model(cfg, stream.num_tasks).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = make_optimizer(model, cfg, device)
        deadline = math.inf if cfg.train.max_minutes is None else cfg.train.max_minutes * 60
        # start is shifted back by a resumed run's elapsed time; used = share of the budget
        # spent, agreed by all ranks each step so their learning rates stay equal
        clock = {"start": time.monotonic(), "used": 0.0}
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg, clock["used"])
        )
        noise_gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + ddp.rank)
        coin_gen = torch.Generator().manual_seed(cfg.train.seed + 77)  # same on every rank
        step, best_val, skipped = 0, math.inf, 0

        if resume:
            where = str(ckpt_dir / "last.pt")
            state = load_checkpoint(ckpt_dir / "last.pt")
            _check_resumable(state, cfg, stream.task_ids, where)
            load_state_strict(model, state["model"], where)
            load_state_strict(ema, state["ema"], where)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, best_val, skipped = state["step"], state["best_val"], state["skipped_steps"]
            clock["start"] -= state.get("elapsed_s", 0.0)  # the time budget counts the whole run
            rng = state["rng"]
            stream.load_state_dict(rng["stream"])
            noise_gen.set_state(rng["noise"][ddp.rank])
            coin_gen.set_state(rng["coin"])
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
        elif (ckpt_dir / "last.pt").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose "
                "another --out"
            )

        train_model: nn.Module = model
        if cfg.train.compile:
            train_model = torch.compile(model)
        if ddp.enabled:
            train_model = DistributedDataParallel(
                train_model, find_unused_parameters=model.self_condition
            )
        if ddp.is_main:
            save_config(cfg, run_dir / "config.json")
            console.print(
                f"[bold]{cfg.name}[/]: {model.num_params():,} parameters, "
                f"{stream.num_tasks} tasks, {stream.num_pairs} training pairs, "
                f"device {device}, world size {ddp.world}"
            )
        logger = MetricsLogger(run_dir, cfg, enabled=ddp.is_main, resume=resume)

        def checkpoint_state() -> dict[str, Any]:
            noise_states = ddp.gather(noise_gen.get_state())
            return {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "best_val": best_val,
                "skipped_steps": skipped,
                "elapsed_s": time.monotonic() - clock["start"],
                "rng": {
                    "stream": stream.state_dict(),
                    "noise": noise_states,
                    "coin": coin_gen.get_state(),
                    "torch": torch.get_rng_state(),
                    "python": random.getstate(),
                },
                "config": config_to_dict(cfg),
                "task_ids": stream.task_ids,
                "model_args": {"num_tasks": stream.num_tasks, "max_size": cfg.data.max_size},
                "num_params": model.num_params(),
                "code_version": code_version(),
            }

        def save(*names: str) -> None:
            state = checkpoint_state()  # every rank joins the gather
            if ddp.is_main:
                for name in names:
                    save_checkpoint(ckpt_dir / f"{name}.pt", state)

        val_batch = stream.validation_batch()
        # checkpoints after these many minutes of training (a learning curve over time)
        snapshots = sorted(
            m for m in cfg.train.snapshot_minutes if not (ckpt_dir / f"min_{m:g}.pt").exists()
        )
        micro = cfg.train.batch_size // cfg.train.grad_accum
        if micro * cfg.train.grad_accum != cfg.train.batch_size:
            raise TrainingError(
                f"train.batch_size={cfg.train.batch_size} is not divisible by "
                f"train.grad_accum={cfg.train.grad_accum}"
            )
        use_bf16 = cfg.train.bf16 and device.type == "cuda"
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        )
        stop_at = min(cfg.train.max_steps, until_step) if until_step else cfg.train.max_steps
        start, val, stop_reason, bad_run = clock["start"], {}, "max_steps", 0
        val_step = -1
        window_start, window_steps = time.monotonic(), 0

        bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not (progress and ddp.is_main),
        )
        with bar:
            job = bar.add_task("train", total=stop_at, completed=step, info="")
            while step < stop_at:
                elapsed = ddp.all_same(time.monotonic() - start)
                minutes_done = elapsed / 60  # the same on every rank
                clock["used"] = min(1.0, elapsed / deadline) if deadline else 1.0
                if elapsed >= deadline:
                    stop_reason = "max_minutes"
                    break
                model.train()
                optimizer.zero_grad(set_to_none=True)
                self_cond = model.self_condition and (
                    torch.rand((), generator=coin_gen).item() < cfg.train.self_cond_prob
                )
                loss_sum, parts_sum = 0.0, {"colour_loss": 0.0, "size_loss": 0.0}
                for k in range(cfg.train.grad_accum):
                    batch = _to(stream.sample(micro), device)
                    steps = diffusion.sample_steps(micro, noise_gen)
                    sync = (
                        train_model.no_sync()
                        if ddp.enabled and k < cfg.train.grad_accum - 1
                        else contextlib.nullcontext()
                    )
                    with sync, autocast:
                        loss, parts, _ = diffusion_loss(
                            train_model,
                            batch,
                            diffusion,
                            steps,
                            noise_gen,
                            cfg.diffusion.size_loss_weight,
                            self_cond,
                        )
                        (loss / cfg.train.grad_accum).backward()
                    loss_sum += loss.item() / cfg.train.grad_accum
                    for name, value in parts.items():
                        parts_sum[name] += value.item() / cfg.train.grad_accum
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                loss_mean = ddp.all_same(loss_sum)
                if not (math.isfinite(loss_mean) and math.isfinite(grad_norm.item())):
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    bad_run += 1
                    logger.log(step, {"skipped": 1, "loss": loss_mean, "grad_norm": grad_norm})
                    if bad_run >= MAX_BAD_STEPS:
                        last = ckpt_dir / "last.pt"
                        kept = (
                            f"the last good checkpoint is {last}"
                            if last.exists()
                            else ("no checkpoint had been written yet")
                        )
                        raise TrainingError(
                            f"{bad_run} non-finite losses in a row at step {step} (lr "
                            f"{scheduler.get_last_lr()[0]:.2e}); training stopped, {kept}"
                        )
                    continue
                bad_run = 0
                optimizer.step()
                scheduler.step()
                step += 1
                ema_update(ema, model, cfg.train.ema_decay, step)
                window_steps += 1

                metrics: dict[str, Any] = {
                    "loss": loss_mean,
                    **{n: ddp.all_same(v) for n, v in parts_sum.items()},
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm.item(),
                    "self_cond": int(self_cond),
                }
                elapsed = time.monotonic() - window_start
                if elapsed > 0:
                    metrics["steps_per_s"] = window_steps / elapsed
                    metrics["examples_per_s"] = (
                        metrics["steps_per_s"] * cfg.train.batch_size * ddp.world
                    )
                metrics["minutes"] = (time.monotonic() - start) / 60
                is_eval = step % cfg.train.eval_every == 0 or step == stop_at
                if is_eval and val_batch is not None:
                    val, val_step = validate(ema, val_batch, diffusion, cfg, device), step
                    metrics.update(val)
                quick = cfg.train.quick_eval_every
                if on_eval is not None and ddp.is_main and quick and step % quick == 0:
                    metrics.update(on_eval(ema, step))
                logger.log(step, metrics)
                bar.update(
                    job,
                    completed=step,
                    info=f"loss {loss_mean:.3f} lr {metrics['lr']:.1e} "
                    f"{metrics.get('steps_per_s', 0):.2f} it/s",
                )
                if is_eval:
                    improved = bool(val) and val["val_loss"] < best_val
                    if improved:
                        best_val = val["val_loss"]
                    if improved:
                        save("last", "best")
                    else:
                        save("last")
                    window_start, window_steps = time.monotonic(), 0
                if cfg.train.save_every and step % cfg.train.save_every == 0:
                    save(f"step_{step:07d}")
                while snapshots and minutes_done >= snapshots[0]:
                    save(f"min_{snapshots.pop(0):g}")
        if step >= cfg.train.max_steps or stop_reason == "max_minutes":
            if val_batch is not None and val_step != step:  # stopped by the clock: validate now
                val, val_step = validate(ema, val_batch, diffusion, cfg, device), step
                logger.log(step, val)
            save("last", "final")
        else:
            stop_reason = "until_step"
            save("last")
        logger.log(step, {"done": stop_reason, "skipped_steps": skipped})
        logger.close()
        return TrainResult(run_dir, step, model, ema, stop_reason, skipped, val)
    finally:
        ddp.close()


def load_run_model(path: Path, *, use_ema: bool = True) -> tuple[Denoiser, Config, dict[str, Any]]:
    """Rebuild a model from a checkpoint file alone (config + model arguments inside)."""
    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"], f"{path} (config)")
        args = state["model_args"]
        model = build_model(cfg, args["num_tasks"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({e})") from None
    load_state_strict(model, state["ema" if use_ema else "model"], str(path))
    return model.eval(), cfg, state
