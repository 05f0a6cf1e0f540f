"""The training loop: read top to bottom as stop, checkpoint, step, validate, log.

One step (train/step.py) draws a batch, corrupts it, denoises, scores, clips, updates and
averages the EMA. Around it the loop keeps the budget (steps and minutes, the closing
validation included), validates on held-out demonstration pairs, writes atomic checkpoints that
resume exactly (every ``eval_every`` steps, every ``checkpoint_minutes``, on SIGINT / SIGTERM),
logs metrics.jsonl (+ wandb), and runs under torchrun (only rank 0 logs and writes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from arcdiff.config import Config, save_config
from arcdiff.console import progress_bar
from arcdiff.errors import TrainingError
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.banner import start_banner
from arcdiff.runs.checkpoint import (
    save_checkpoint,
)
from arcdiff.runs.cpu import CpuWatch, setup_cpu
from arcdiff.runs.device import (
    check_cpu_bf16,
)
from arcdiff.runs.paths import checkpoints_dir
from arcdiff.train.distributed import Distributed
from arcdiff.train.interrupt import StopSignals, TrainingInterrupted
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.resume import prepare_run_dir, start_state
from arcdiff.train.session import Session, new_session, train_step_for
from arcdiff.train.step import StepResult
from arcdiff.train.validate import closing_estimate, validate

MAX_BAD_STEPS = 5  # consecutive non-finite steps before training stops


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    model: Denoiser
    ema: Denoiser
    stop_reason: str  # "max_steps", "max_minutes" or "until_step"
    skipped_steps: int
    val: dict[str, float]


def _step_metrics(r: StepResult, s: Session, window: tuple[float, int]) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "loss": r.loss,
        **r.parts,
        "lr": s.scheduler.get_last_lr()[0],
        "grad_norm": r.grad_norm,
        "self_cond": int(r.self_cond),
    }
    seconds = time.monotonic() - window[0]
    if seconds > 0:
        metrics["steps_per_s"] = window[1] / seconds
        metrics["examples_per_s"] = metrics["steps_per_s"] * s.cfg.train.batch_size * s.ddp.world
    metrics["minutes"] = (time.monotonic() - s.clock["start"]) / 60
    return metrics


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
    t = cfg.train
    ddp = Distributed(device)
    device = ddp.device
    cpu = setup_cpu(t.threads, device)
    console = console or Console()
    ckpt_dir = checkpoints_dir(run_dir)
    # one line per phase when the progress bar cannot be drawn (a log file, a pipe)
    lines = progress and ddp.is_main and not console.is_terminal

    def say(message: str) -> None:
        if ddp.is_main:
            console.print(message, markup=False, highlight=False, soft_wrap=True)

    try:
        check_cpu_bf16(device, t.cpu_bf16)
        begin = start_state(run_dir, resume, say)
        if ddp.is_main:
            prepare_run_dir(run_dir)
        s = new_session(cfg, ddp)
        if begin is not None:
            s.restore(*begin, say)
        take_step = train_step_for(s)
        if ddp.is_main:
            save_config(s.cfg, run_dir / "config.json")
            console.print(
                start_banner(
                    cfg,
                    run_dir,
                    params=s.model.num_params(),
                    tasks=s.stream.num_tasks,
                    pairs=s.stream.num_pairs,
                    alone=s.stream.num_alone,
                    device=device,
                    world=ddp.world,
                    step=s.step,
                )
            )
        keep = (s.metrics_rows, s.step) if begin is not None else None
        logger = s.logger = MetricsLogger(run_dir, cfg, enabled=ddp.is_main, keep=keep)

        def save(*names: str) -> None:
            state = s.state()
            if ddp.is_main:
                for name in names:
                    save_checkpoint(ckpt_dir / f"{name}.pt", state)

        val_batch = s.stream.validation_batch()
        n_val = 0 if val_batch is None else len(val_batch)
        timing: dict[str, float] = {"step_s": 0.0}  # one step's and one validation's seconds

        def validate_now() -> dict[str, float]:
            began = time.monotonic()
            out = validate(s.ema, val_batch, take_step.diffusion, cfg, device)
            timing["val_s"] = time.monotonic() - began
            return {**out, "val_s": timing["val_s"]}

        # checkpoints after these many minutes of training (a learning curve over time)
        snapshots = sorted(
            m for m in t.snapshot_minutes if not (ckpt_dir / f"min_{m:g}.pt").exists()
        )
        deadline = math.inf if t.max_minutes is None else t.max_minutes * 60
        stop_at = min(t.max_steps, until_step) if until_step else t.max_steps
        start, val, stop_reason, bad_run = s.clock["start"], {}, "max_steps", 0
        window = (time.monotonic(), 0)
        every_s = (t.checkpoint_minutes or 0) * 60
        saved_at = time.monotonic() - start  # run time of the last by-the-clock save

        watch = CpuWatch(cpu.threads) if device.type == "cpu" else None
        # under a clock budget the bar counts its minutes, else its steps
        bar = progress_bar("train", console, progress and ddp.is_main, count=deadline == math.inf)
        with bar, StopSignals() as signals:
            total = stop_at if deadline == math.inf else deadline
            done = s.step if deadline == math.inf else time.monotonic() - start
            job = bar.add_task("train", total=total, completed=done, info="")
            while s.step < stop_at:
                reserve = timing.get("val_s", closing_estimate(timing["step_s"], n_val, cfg))
                elapsed, reserve, asked = ddp.mean_of(
                    time.monotonic() - start, reserve if n_val else 0.0, signals.exit_code
                )
                minutes_done = elapsed / 60  # the same on every rank
                if s.horizon.due(s.step):
                    (step_s,) = ddp.mean_of(s.horizon.mean_step_s())  # one horizon on every rank
                    s.fix_horizon(s.horizon.fix(s.step, elapsed, step_s, reserve))
                    if ddp.is_main:
                        save_config(s.cfg, run_dir / "config.json")
                    say(
                        f"schedule: {t.max_minutes:g} minutes buy about {s.horizon.steps} steps "
                        f"at {1 / step_s:.2f} steps/s; the learning rate anneals by step "
                        f"{s.horizon.steps} (train.horizon_steps, saved in config.json)"
                    )
                    logger.log(s.step, {"horizon_steps": s.horizon.steps, "step_s": step_s})
                if asked:  # a signal reached a rank: every rank saves and stops here
                    save("last")
                    logger.close()
                    code = signals.exit_code or 130  # 130 where another rank was signalled
                    raise TrainingInterrupted(
                        f"interrupted at step {s.step} ({'SIGTERM' if code == 143 else 'SIGINT'})"
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
                step_began, cpu_began = time.monotonic(), time.process_time()
                r = take_step(
                    s.stream.sample, t.batch_size, s.noise_gen, s.coin_gen, s.step, device=device
                )
                step_wall = time.monotonic() - step_began
                slow = watch.update(step_wall, time.process_time() - cpu_began) if watch else None
                if slow is not None:
                    if slow.threads is not None:
                        torch.set_num_threads(slow.threads)
                        s.horizon.retime()  # the warmup's rate no longer holds
                    say(f"step {s.step}: {slow.message()}")
                    logger.log(s.step, slow.metrics())
                if not r.applied:
                    s.skipped += 1
                    bad_run += 1
                    logger.log(s.step, {"skipped": 1, "loss": r.loss, "grad_norm": r.grad_norm})
                    if bad_run >= MAX_BAD_STEPS:
                        last = ckpt_dir / "last.pt"
                        kept = (
                            f"the last good checkpoint is {last}"
                            if last.exists()
                            else "no checkpoint had been written yet"
                        )
                        raise TrainingError(
                            f"{bad_run} non-finite losses in a row at step {s.step} (lr "
                            f"{s.scheduler.get_last_lr()[0]:.2e}); training stopped, {kept}"
                        )
                    continue
                bad_run = 0
                s.step += 1
                window = (window[0], window[1] + 1)
                timing["step_s"] = step_wall
                s.horizon.time_step(step_wall)

                metrics = _step_metrics(r, s, window)
                is_eval = s.step % t.eval_every == 0 or s.step == stop_at
                if is_eval and val_batch is not None:
                    val, s.val_step = validate_now(), s.step
                    metrics.update(val)
                quick = t.quick_eval_every
                if on_eval is not None and ddp.is_main and quick and s.step % quick == 0:
                    metrics.update(on_eval(s.ema, s.step))
                logger.log(s.step, metrics)
                info = (
                    f"loss {r.loss:.3f} lr {metrics['lr']:.1e} "
                    f"{metrics.get('steps_per_s', 0):.2f} steps/s"
                )
                if deadline == math.inf:
                    bar.update(job, completed=s.step, info=info)
                    line = f"train step {s.step}/{stop_at}: {info}, {metrics['minutes']:.1f} min"
                else:  # the budget's minutes, not a fraction of max_steps
                    info = f"{metrics['minutes']:.1f}/{t.max_minutes:g} min, step {s.step}, {info}"
                    bar.update(job, completed=metrics["minutes"] * 60, info=info)
                    line = f"train {info}"
                if lines and is_eval:
                    say(line)
                if is_eval:
                    improved = bool(val) and val["val_loss"] < s.best_val
                    if improved:
                        s.best_val = val["val_loss"]
                    save(*(("last", "best") if improved else ("last",)))
                    window = (time.monotonic(), 0)
                if t.save_every and s.step % t.save_every == 0:
                    save(f"step_{s.step:07d}")
                while snapshots and minutes_done >= snapshots[0]:
                    save(f"min_{snapshots.pop(0):g}")
        if s.step >= t.max_steps or stop_reason == "max_minutes":
            if val_batch is not None and s.val_step != s.step:  # stopped by the clock
                if lines:
                    say(f"validating on {n_val} held-out pairs (step {s.step})")
                shown = progress and ddp.is_main and console.is_terminal
                with console.status("validating") if shown else contextlib.nullcontext():
                    val, s.val_step = validate_now(), s.step
                logger.log(s.step, val)
            save("last", "final")
        else:
            stop_reason = "until_step"
            save("last")
        wall = time.monotonic() - start
        logger.log(
            s.step,
            {
                "done": stop_reason,
                "skipped_steps": s.skipped,
                "wall_s": wall,
                "horizon_steps": s.horizon.steps,
            },
        )
        logger.close()
        return TrainResult(run_dir, s.step, s.model, s.ema, stop_reason, s.skipped, val)
    finally:
        ddp.close()
