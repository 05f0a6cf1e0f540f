"""The training loop: read top to bottom as stop, checkpoint, step, validate, log.

One step (train/step.py) draws a batch, corrupts it, denoises, scores, clips, updates and
averages the EMA. Around it the loop keeps the budget (steps and minutes, the closing
validation included), validates on held-out demonstration pairs, writes atomic checkpoints that
resume exactly (every ``eval_every`` steps, every ``checkpoint_minutes``, on SIGINT / SIGTERM),
logs metrics.jsonl (+ wandb), and runs under torchrun (only rank 0 logs and writes).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from arcdiff.config import Config, config_to_dict, save_config
from arcdiff.console import progress_bar
from arcdiff.data.dataset import TrainingStream, stream_from_config
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import TrainingError
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.banner import start_banner
from arcdiff.runs.checkpoint import (
    build_model,
    checkpoint_state,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.runs.cpu import CpuWatch, setup_cpu
from arcdiff.runs.device import (
    check_cpu_bf16,
    cuda_rng_state,
    fast_math,
    restore_cuda_rng,
    seeded_generator,
)
from arcdiff.train.distributed import Distributed
from arcdiff.train.horizon import Horizon
from arcdiff.train.interrupt import StopSignals, TrainingInterrupted
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.muon import load_optimizer_state
from arcdiff.train.optim import make_optimizer
from arcdiff.train.resume import check_resumable, prepare_run_dir, start_state
from arcdiff.train.step import StepResult, TrainStep
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


@dataclass
class _Session:
    """A run's live state: what a checkpoint saves and a resume restores."""

    cfg: Config
    ddp: Distributed
    stream: TrainingStream
    model: Denoiser
    ema: Denoiser
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    noise_gen: torch.Generator  # corruption noise on the model's device, one stream per rank
    coin_gen: torch.Generator  # self-conditioning coin, the same on every rank
    clock: dict[str, float]  # start (shifted back by a resumed run's time)
    horizon: Horizon  # where the learning-rate cosine ends
    step: int = 0
    best_val: float = math.inf
    skipped: int = 0
    val_step: int = -1
    metrics_rows: int | None = None
    logger: MetricsLogger | None = field(default=None, repr=False)

    def state(self) -> dict[str, Any]:
        noise_states = self.ddp.gather(self.noise_gen.get_state())  # every rank joins
        cfg, stream = self.cfg, self.stream
        return checkpoint_state(
            model=self.model,
            ema=self.ema,
            config=config_to_dict(cfg),
            step=self.step,
            model_args={"num_tasks": stream.num_tasks, "max_size": cfg.data.max_size},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            best_val=self.best_val,
            skipped_steps=self.skipped,
            val_step=self.val_step,
            metrics_rows=self.logger.rows if self.logger else 0,  # a resume keeps these rows
            horizon_steps=self.horizon.steps,
            elapsed_s=time.monotonic() - self.clock["start"],
            rng={
                "stream": stream.state_dict(),
                "noise": noise_states,
                "coin": self.coin_gen.get_state(),
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                **cuda_rng_state(self.ddp.device),  # dropout on CUDA draws from it
            },
            task_ids=stream.task_ids,
            num_params=self.model.num_params(),
        )

    def restore(self, path: Path, state: dict[str, Any], say: Callable[[str], None]) -> None:
        where = str(path)
        check_resumable(state, self.cfg, self.stream.task_ids, where)
        load_state_strict(self.model, state["model"], where)
        load_state_strict(self.ema, state["ema"], where)
        load_optimizer_state(self.optimizer, state["optimizer"], where)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_val = state["step"], state["best_val"]
        self.skipped, self.val_step = state["skipped_steps"], state.get("val_step", -1)
        self.metrics_rows = state.get("metrics_rows")
        self.clock["start"] -= state.get("elapsed_s", 0.0)  # the budget counts the whole run
        if state.get("horizon_steps") is not None and self.cfg.train.horizon_steps is None:
            self.fix_horizon(state["horizon_steps"])
        rng = state["rng"]
        self.stream.load_state_dict(rng["stream"])
        saved = rng["noise"]  # one state per rank of the run that saved it
        if len(saved) == self.ddp.world and saved[0].numel() == self.noise_gen.get_state().numel():
            self.noise_gen.set_state(saved[self.ddp.rank])
        else:
            self.noise_gen.manual_seed(noise_seed(self.cfg.train.seed, self.ddp.rank, self.step))
            why = (
                f"saved by {len(saved)} process(es), resumed on {self.ddp.world}"
                if len(saved) != self.ddp.world
                else f"its noise was drawn on another device than {self.ddp.device}"
            )
            say(
                f"{where}: {why}; the corruption noise is re-seeded at step {self.step} "
                "(weights, optimizer and the data stream resume from the checkpoint)"
            )
        self.coin_gen.set_state(rng["coin"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        restore_cuda_rng(rng, self.ddp.device)

    def fix_horizon(self, steps: int) -> None:
        """Freeze the schedule's horizon; later checkpoints carry it in their config too."""
        self.horizon.steps = steps
        self.cfg = replace(self.cfg, train=replace(self.cfg.train, horizon_steps=steps))


def noise_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank's corruption noise: ``seed * 1000 + rank`` from step 0 (as always),
    moved on by the step where a resume re-seeds it, so no rank repeats its first draws."""
    return seed * 1000 + rank + (step << 32)


def _session(cfg: Config, ddp: Distributed) -> _Session:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    random.seed(cfg.train.seed)
    stream = stream_from_config(cfg.data, rank=ddp.rank, world_size=ddp.world)
    model = build_model(cfg, stream.num_tasks).to(ddp.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    t = cfg.train
    optimizer = make_optimizer(
        model, t.lr, t.weight_decay, ddp.device, kind=t.optimizer, muon_lr=t.muon_lr
    )
    clock = {"start": time.monotonic()}
    horizon = Horizon(t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, horizon.factor)
    noise_gen = seeded_generator(ddp.device, noise_seed(t.seed, ddp.rank))
    coin_gen = seeded_generator("cpu", t.seed + 77)  # read on the host each step
    return _Session(
        cfg, ddp, stream, model, ema, optimizer, scheduler, noise_gen, coin_gen, clock, horizon
    )


def _train_step(s: _Session) -> TrainStep:
    cfg, device = s.cfg, s.ddp.device
    t = cfg.train
    if t.batch_size % t.grad_accum:
        raise TrainingError(
            f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}"
        )
    forward: nn.Module = torch.compile(s.model) if t.compile else s.model
    if s.ddp.enabled:
        forward = DistributedDataParallel(forward, find_unused_parameters=s.model.self_condition)
    return TrainStep(
        model=s.model,
        forward=forward,
        diffusion=DiscreteDiffusion.from_config(cfg.diffusion),
        optimizer=s.optimizer,
        scheduler=s.scheduler,
        ema=s.ema,
        ema_decay=t.ema_decay,
        grad_clip=t.grad_clip,
        size_loss_weight=cfg.diffusion.size_loss_weight,
        self_cond_prob=t.self_cond_prob,
        grad_accum=t.grad_accum,
        autocast=lambda: fast_math(device, t.bf16, cpu_bf16=t.cpu_bf16),
        no_sync=forward.no_sync if s.ddp.enabled else None,
        mean=s.ddp.mean,
    )


def _step_metrics(r: StepResult, s: _Session, window: tuple[float, int]) -> dict[str, Any]:
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
    ckpt_dir = run_dir / "checkpoints"
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
        s = _session(cfg, ddp)
        if begin is not None:
            s.restore(*begin, say)
        take_step = _train_step(s)
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
