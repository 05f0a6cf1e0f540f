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
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import arcdiff
from arcdiff.config import Config, config_from_dict, config_to_dict, save_config
from arcdiff.data.dataset import Batch, stream_from_config
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, OutputError, TrainingError
from arcdiff.model.denoiser import Denoiser, DenoiserOutput
from arcdiff.train.checkpoint import (
    first_difference,
    load_checkpoint,
    load_state_strict,
    newest_checkpoint,
    save_checkpoint,
)
from arcdiff.train.distributed import Distributed
from arcdiff.train.interrupt import StopSignals, TrainingInterrupted
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


def _check_resumable(state: dict[str, Any], cfg: Config, task_ids: list[str], where: str) -> None:
    saved = state["config"]
    now = config_to_dict(cfg)
    for section in FROZEN_SECTIONS:
        diff = first_difference(saved.get(section, {}), now[section], f"{section}.")
        if diff:
            raise CheckpointError(f"{where}: config differs from the checkpoint's: {diff}")
    if state.get("task_ids") != task_ids:
        raise CheckpointError(f"{where}: the checkpoint was trained on other tasks")


def run_files(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to a training run (config, metrics, checkpoints)."""
    found = [name for name in ("config.json", "metrics.jsonl") if (run_dir / name).is_file()]
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir():
        found += sorted(f"checkpoints/{p.name}" for p in ckpt_dir.glob("*.pt"))
    return found


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and checkpoints/) or say in one line why it cannot be."""
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"{run_dir}: cannot create the run directory ({e.strerror or e})"
        ) from None


def _start_state(
    run_dir: Path, resume: bool, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run continues from: None for a new run (or one killed before its
    first checkpoint). A new run never replaces files of an earlier one."""
    ckpt_dir = run_dir / "checkpoints"
    found = run_files(run_dir)
    if not resume:
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose "
                f"another --out (found {shown})"
            )
        return None
    for tmp in ckpt_dir.glob(".*.pt.tmp"):  # a save cut short by kill -9
        say(f"removed {tmp}, a checkpoint write that did not finish")
        tmp.unlink(missing_ok=True)
    newest = newest_checkpoint(ckpt_dir)
    if newest is None:
        unreadable = [f for f in found if f.endswith(".pt")]
        if unreadable:
            raise CheckpointError(
                f"{run_dir}: no readable checkpoint to resume ({', '.join(unreadable)} "
                "could not be read)"
            )
        if not found:
            raise CheckpointError(
                f"{ckpt_dir / 'last.pt'}: no such checkpoint (nor any step_*.pt) to resume"
            )
        say(f"{run_dir}: no checkpoint was saved yet; starting the run again from step 0")
        return None
    path, state, problems = newest
    for problem in problems:
        say(f"skipped {problem}")
    say(f"resuming from {path} (step {state['step']})")
    return path, state


def _final_val_estimate(step_s: float, n_val: int, cfg: Config) -> float:
    """Seconds the closing validation will take, before one has been timed: five forward
    passes over the held-out pairs (two with self-conditioning), each costing about half a
    training step per example (a forward is a third of forward + backward, but validation
    runs on whole canvases where training crops to size buckets: 0.43 measured on toiny_aa1,
    NOTES.md "Runs survive interruption")."""
    passes = NUM_NOISE_BUCKETS * (2 if cfg.model.self_condition else 1)
    return passes * step_s * n_val / cfg.train.batch_size / 2


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

    ``resume`` continues from the newest readable checkpoint among ``last.pt`` and
    ``step_*.pt`` exactly (same batches, noise and optimizer state); metrics.jsonl keeps the
    rows that checkpoint had seen. Without it, a folder that holds any part of a run is
    refused. ``until_step`` stops early at that step, saving ``last.pt`` only, as an
    interrupted run would. ``last.pt`` is also written every ``train.checkpoint_minutes`` and
    on SIGINT / SIGTERM, which then end in :class:`TrainingInterrupted`. The time budget
    ``train.max_minutes`` includes the closing validation. ``on_eval(ema_model, step)``, if
    given, runs on the main process every ``train.quick_eval_every`` steps and its metrics are
    logged (a quick score).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ddp = Distributed(device)
    device = ddp.device
    console = console or Console()
    ckpt_dir = run_dir / "checkpoints"
    # one line per phase when the progress bar cannot be drawn (a log file, a pipe)
    lines = progress and ddp.is_main and not console.is_terminal

    def say(message: str) -> None:
        if ddp.is_main:
            console.print(message, markup=False, highlight=False, soft_wrap=True)

    try:
        start_state = _start_state(run_dir, resume, say)
        if ddp.is_main:
            prepare_run_dir(run_dir)
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
        step, best_val, skipped, val_step, metrics_rows = 0, math.inf, 0, -1, None

        if start_state is not None:
            path, state = start_state
            where = str(path)
            _check_resumable(state, cfg, stream.task_ids, where)
            load_state_strict(model, state["model"], where)
            load_state_strict(ema, state["ema"], where)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, best_val, skipped = state["step"], state["best_val"], state["skipped_steps"]
            val_step = state.get("val_step", -1)
            metrics_rows = state.get("metrics_rows")
            clock["start"] -= state.get("elapsed_s", 0.0)  # the time budget counts the whole run
            rng = state["rng"]
            stream.load_state_dict(rng["stream"])
            noise_gen.set_state(rng["noise"][ddp.rank])
            coin_gen.set_state(rng["coin"])
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])

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
        keep = (metrics_rows, step) if start_state is not None else None
        logger = MetricsLogger(run_dir, cfg, enabled=ddp.is_main, keep=keep)

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
                "val_step": val_step,
                "metrics_rows": logger.rows,  # a resume keeps these rows of metrics.jsonl
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

        def validate_now() -> dict[str, float]:
            began = time.monotonic()
            out = validate(ema, val_batch, diffusion, cfg, device)
            timing["val_s"] = time.monotonic() - began
            return {**out, "val_s": timing["val_s"]}

        val_batch = stream.validation_batch()
        n_val = 0 if val_batch is None else len(val_batch)
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
        window_start, window_steps = time.monotonic(), 0
        # seconds of one step and of one validation, for the closing validation's reserve
        timing: dict[str, float] = {"step_s": 0.0}
        every_s = (cfg.train.checkpoint_minutes or 0) * 60
        saved_at = time.monotonic() - start  # run time of the last by-the-clock save

        bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not (progress and ddp.is_main),
        )
        with bar, StopSignals() as signals:
            job = bar.add_task("train", total=stop_at, completed=step, info="")
            while step < stop_at:
                if "val_s" in timing:
                    reserve = timing["val_s"]
                else:
                    reserve = _final_val_estimate(timing["step_s"], n_val, cfg)
                elapsed, reserve, asked = ddp.mean(
                    time.monotonic() - start, reserve if n_val else 0.0, signals.exit_code
                )
                minutes_done = elapsed / 60  # the same on every rank
                clock["used"] = min(1.0, elapsed / deadline) if deadline else 1.0
                if asked:  # a signal reached a rank: every rank saves and stops here
                    save("last")
                    logger.close()
                    code = signals.exit_code or 130  # 130 where another rank was signalled
                    raise TrainingInterrupted(
                        f"interrupted at step {step} ({'SIGTERM' if code == 143 else 'SIGINT'})"
                        f"; saved {ckpt_dir / 'last.pt'}; continue it with the same command "
                        f"and --resume (--out {run_dir})",
                        code,
                    )
                if elapsed + reserve >= deadline:
                    stop_reason = "max_minutes"
                    break
                if every_s and elapsed - saved_at >= every_s:
                    save("last")
                    saved_at = elapsed
                step_began = time.monotonic()
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
                loss_mean, *part_means = ddp.mean(loss_sum, *parts_sum.values())
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
                timing["step_s"] = time.monotonic() - step_began

                metrics: dict[str, Any] = {
                    "loss": loss_mean,
                    **dict(zip(parts_sum, part_means, strict=True)),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm.item(),
                    "self_cond": int(self_cond),
                }
                window = time.monotonic() - window_start
                if window > 0:
                    metrics["steps_per_s"] = window_steps / window
                    metrics["examples_per_s"] = (
                        metrics["steps_per_s"] * cfg.train.batch_size * ddp.world
                    )
                metrics["minutes"] = (time.monotonic() - start) / 60
                is_eval = step % cfg.train.eval_every == 0 or step == stop_at
                if is_eval and val_batch is not None:
                    val, val_step = validate_now(), step
                    metrics.update(val)
                quick = cfg.train.quick_eval_every
                if on_eval is not None and ddp.is_main and quick and step % quick == 0:
                    metrics.update(on_eval(ema, step))
                logger.log(step, metrics)
                info = (
                    f"loss {loss_mean:.3f} lr {metrics['lr']:.1e} "
                    f"{metrics.get('steps_per_s', 0):.2f} it/s"
                )
                bar.update(job, completed=step, info=info)
                if lines and is_eval:
                    say(f"train step {step}/{stop_at}: {info}, {metrics['minutes']:.1f} min")
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
                if lines:
                    say(f"validating on {n_val} held-out pairs (step {step})")
                shown = progress and ddp.is_main and console.is_terminal
                with console.status("validating") if shown else contextlib.nullcontext():
                    val, val_step = validate_now(), step
                logger.log(step, val)
            save("last", "final")
        else:
            stop_reason = "until_step"
            save("last")
        wall = time.monotonic() - start
        logger.log(step, {"done": stop_reason, "skipped_steps": skipped, "wall_s": wall})
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
