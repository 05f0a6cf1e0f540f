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
from rich.progress import Progress, TaskID

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
from arcdiff.train.step import StepResult, TrainStep
from arcdiff.train.validate import closing_estimate, validate

MAX_BAD_STEPS = 5  # consecutive non-finite steps before training stops


def snapshot_name(minutes: float) -> str:
    """The checkpoint ``train.snapshot_minutes`` saves after ``minutes`` of training: min_15."""
    return f"min_{minutes:g}"


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


class _Loop:
    """The loop over one session: the budget (steps, minutes, the closing validation
    included), validation, checkpoints, metrics and the progress bar."""

    def __init__(
        self,
        cfg: Config,
        s: Session,
        take_step: TrainStep,
        run_dir: Path,
        console: Console,
        say: Callable[[str], None],
        *,
        progress: bool,
        until_step: int | None,
        on_eval: Callable[[Denoiser, int], dict[str, Any]] | None,
        cpu_threads: int,
    ) -> None:
        t = cfg.train
        self.cfg, self.t, self.s, self.take_step = cfg, t, s, take_step
        self.run_dir, self.console, self.say = run_dir, console, say
        self.progress, self.on_eval = progress, on_eval
        self.ckpt_dir = ckpt_dir = checkpoints_dir(run_dir)
        # one line per phase when the progress bar cannot be drawn (a log file, a pipe)
        self.lines = progress and s.ddp.is_main and not console.is_terminal
        self.logger = s.logger
        assert self.logger is not None
        self.val_batch = s.stream.validation_batch()
        self.n_val = 0 if self.val_batch is None else len(self.val_batch)
        self.timing: dict[str, float] = {"step_s": 0.0}  # one step's and one validation's seconds
        # checkpoints after these many minutes of training (a learning curve over time)
        self.snapshots = sorted(
            m for m in t.snapshot_minutes if not (ckpt_dir / f"{snapshot_name(m)}.pt").exists()
        )
        self.deadline = math.inf if t.max_minutes is None else t.max_minutes * 60
        self.stop_at = min(t.max_steps, until_step) if until_step else t.max_steps
        self.start, self.val, self.bad_run = s.clock["start"], {}, 0
        self.window = (time.monotonic(), 0)
        self.every_s = (t.checkpoint_minutes or 0) * 60
        self.saved_at = time.monotonic() - self.start  # run time of the last by-the-clock save
        self.watch = CpuWatch(cpu_threads) if s.ddp.device.type == "cpu" else None

    def save(self, *names: str) -> None:
        state = self.s.state()
        if self.s.ddp.is_main:
            for name in names:
                save_checkpoint(self.ckpt_dir / f"{name}.pt", state)

    def validate_now(self) -> dict[str, float]:
        began = time.monotonic()
        out = validate(
            self.s.ema, self.val_batch, self.take_step.diffusion, self.cfg, self.s.ddp.device
        )
        self.timing["val_s"] = time.monotonic() - began
        return {**out, "val_s": self.timing["val_s"]}

    def run(self) -> str:
        """Steps until ``stop_at`` or the clock; returns why it stopped ("max_steps" or
        "max_minutes"). A signal saves ``last.pt`` and ends in :class:`TrainingInterrupted`."""
        s, t, ddp, deadline = self.s, self.t, self.s.ddp, self.deadline
        start, device = self.start, ddp.device
        # under a clock budget the bar counts its minutes, else its steps
        bar = progress_bar(
            "train", self.console, self.progress and ddp.is_main, count=deadline == math.inf
        )
        with bar, StopSignals() as signals:
            total = self.stop_at if deadline == math.inf else deadline
            done = s.step if deadline == math.inf else time.monotonic() - start
            job = bar.add_task("train", total=total, completed=done, info="")
            while s.step < self.stop_at:
                timing, n_val = self.timing, self.n_val
                reserve = timing.get("val_s", closing_estimate(timing["step_s"], n_val, self.cfg))
                elapsed, reserve, asked = ddp.mean_of(
                    time.monotonic() - start, reserve if n_val else 0.0, signals.exit_code
                )
                minutes_done = elapsed / 60  # the same on every rank
                if s.horizon.due(s.step):
                    self.fix_horizon(elapsed, reserve)
                if asked:  # a signal reached a rank: every rank saves and stops here
                    self.interrupted(signals.exit_code)
                if elapsed + reserve >= deadline:
                    return "max_minutes"
                if self.every_s and elapsed - self.saved_at >= self.every_s:
                    self.save("last")
                    self.saved_at = elapsed
                step_began, cpu_began = time.monotonic(), time.process_time()
                r = self.take_step(
                    s.stream.sample, t.batch_size, s.noise_gen, s.coin_gen, s.step, device=device
                )
                step_wall = time.monotonic() - step_began
                self.watch_cpu(step_wall, time.process_time() - cpu_began)
                if not r.applied:
                    self.skip(r)
                    continue
                self.bad_run = 0
                s.step += 1
                self.window = (self.window[0], self.window[1] + 1)
                timing["step_s"] = step_wall
                s.horizon.time_step(step_wall)
                self.after_step(r, bar, job)
                while self.snapshots and minutes_done >= self.snapshots[0]:
                    self.save(snapshot_name(self.snapshots.pop(0)))
        return "max_steps"

    def fix_horizon(self, elapsed: float, reserve: float) -> None:
        s, t, ddp = self.s, self.t, self.s.ddp
        (step_s,) = ddp.mean_of(s.horizon.mean_step_s())  # one horizon on every rank
        s.fix_horizon(s.horizon.fix(s.step, elapsed, step_s, reserve))
        if ddp.is_main:
            save_config(s.cfg, self.run_dir / "config.json")
        self.say(
            f"schedule: {t.max_minutes:g} minutes buy about {s.horizon.steps} steps "
            f"at {1 / step_s:.2f} steps/s; the learning rate anneals by step "
            f"{s.horizon.steps} (train.horizon_steps, saved in config.json)"
        )
        self.logger.log(s.step, {"horizon_steps": s.horizon.steps, "step_s": step_s})

    def interrupted(self, exit_code: int | None) -> None:
        self.save("last")
        self.logger.close()
        code = exit_code or 130  # 130 where another rank was signalled
        raise TrainingInterrupted(
            f"interrupted at step {self.s.step} ({'SIGTERM' if code == 143 else 'SIGINT'})"
            f"; saved {self.ckpt_dir / 'last.pt'}; continue it with the same command "
            f"and --resume (--out {self.run_dir})",
            code,
        )

    def watch_cpu(self, step_wall: float, step_cpu: float) -> None:
        """A shared CPU seen by the watch: fewer threads, the warmup timed again."""
        slow = self.watch.update(step_wall, step_cpu) if self.watch else None
        if slow is not None:
            if slow.threads is not None:
                torch.set_num_threads(slow.threads)
                self.s.horizon.retime()  # the warmup's rate no longer holds
            self.say(f"step {self.s.step}: {slow.message()}")
            self.logger.log(self.s.step, slow.metrics())

    def skip(self, r: StepResult) -> None:
        """A step whose update was not applied; too many in a row stop the run."""
        s = self.s
        s.skipped += 1
        self.bad_run += 1
        self.logger.log(s.step, {"skipped": 1, "loss": r.loss, "grad_norm": r.grad_norm})
        if self.bad_run >= MAX_BAD_STEPS:
            last = self.ckpt_dir / "last.pt"
            kept = (
                f"the last good checkpoint is {last}"
                if last.exists()
                else "no checkpoint had been written yet"
            )
            raise TrainingError(
                f"{self.bad_run} non-finite losses in a row at step {s.step} (lr "
                f"{s.scheduler.get_last_lr()[0]:.2e}); training stopped, {kept}"
            )

    def after_step(self, r: StepResult, bar: Progress, job: TaskID) -> None:
        """Log the step; validate, quick-evaluate and checkpoint when they are due."""
        s, t, ddp = self.s, self.t, self.s.ddp
        metrics = _step_metrics(r, s, self.window)
        is_eval = s.step % t.eval_every == 0 or s.step == self.stop_at
        if is_eval and self.val_batch is not None:
            self.val, s.val_step = self.validate_now(), s.step
            metrics.update(self.val)
        quick = t.quick_eval_every
        if self.on_eval is not None and ddp.is_main and quick and s.step % quick == 0:
            metrics.update(self.on_eval(s.ema, s.step))
        self.logger.log(s.step, metrics)
        info = (
            f"loss {r.loss:.3f} lr {metrics['lr']:.1e} {metrics.get('steps_per_s', 0):.2f} steps/s"
        )
        if self.deadline == math.inf:
            bar.update(job, completed=s.step, info=info)
            line = f"train step {s.step}/{self.stop_at}: {info}, {metrics['minutes']:.1f} min"
        else:  # the budget's minutes, not a fraction of max_steps
            info = f"{metrics['minutes']:.1f}/{t.max_minutes:g} min, step {s.step}, {info}"
            bar.update(job, completed=metrics["minutes"] * 60, info=info)
            line = f"train {info}"
        if self.lines and is_eval:
            self.say(line)
        if is_eval:
            improved = bool(self.val) and self.val["val_loss"] < s.best_val
            if improved:
                s.best_val = self.val["val_loss"]
            self.save(*(("last", "best") if improved else ("last",)))
            self.window = (time.monotonic(), 0)
        if t.save_every and s.step % t.save_every == 0:
            self.save(f"step_{s.step:07d}")

    def close(self, stop_reason: str) -> TrainResult:
        """The closing validation (a run stopped by the clock) and checkpoints; the last row."""
        s, t, ddp, logger = self.s, self.t, self.s.ddp, self.logger
        if s.step >= t.max_steps or stop_reason == "max_minutes":
            if self.val_batch is not None and s.val_step != s.step:  # stopped by the clock
                if self.lines:
                    self.say(f"validating on {self.n_val} held-out pairs (step {s.step})")
                shown = self.progress and ddp.is_main and self.console.is_terminal
                with self.console.status("validating") if shown else contextlib.nullcontext():
                    self.val, s.val_step = self.validate_now(), s.step
                logger.log(s.step, self.val)
            self.save("last", "final")
        else:
            stop_reason = "until_step"
            self.save("last")
        wall = time.monotonic() - self.start
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
        return TrainResult(self.run_dir, s.step, s.model, s.ema, stop_reason, s.skipped, self.val)


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
                ),
                soft_wrap=True,  # a path is copied from the terminal: never broken across lines
            )
        keep = (s.metrics_rows, s.step) if begin is not None else None
        s.logger = MetricsLogger(run_dir, cfg, enabled=ddp.is_main, keep=keep)
        loop = _Loop(
            cfg,
            s,
            take_step,
            run_dir,
            console,
            say,
            progress=progress,
            until_step=until_step,
            on_eval=on_eval,
            cpu_threads=cpu.threads,
        )
        return loop.close(loop.run())
    finally:
        ddp.close()
