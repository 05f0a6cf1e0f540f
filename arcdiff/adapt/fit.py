"""Training an adaptation: ``lora.steps`` steps (or a clock budget) of train/step.py's
TrainStep on the tasks' demonstration pairs, a fresh augmentation per example; per-task mode
runs it once per task; ``lora.embed_first`` trains the new task rows alone first."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft.utils import set_peft_model_state_dict
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from torch import Tensor, nn

from arcdiff.adapt.model import Adapted, TaskRows, adapted_task_ids, adapter_state, prepare
from arcdiff.config import Config
from arcdiff.console import progress_bar
from arcdiff.data.dataset import Batch, TrainingStream
from arcdiff.data.tasks import Task, TaskSet
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import DataError, TrainingError
from arcdiff.runs.checkpoint import LoadedRun
from arcdiff.runs.device import seeded_generator
from arcdiff.runs.paths import select_device
from arcdiff.train.horizon import MIN_TIMED_STEPS, Horizon
from arcdiff.train.interrupt import StopSignals
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.optim import make_optimizer
from arcdiff.train.step import TrainStep

# warmup steps of a clock-budgeted adaptation: the steps it takes to time the step rate, after
# which the horizon is fixed (a per-task solve may have a dozen steps in all)
CLOCK_WARMUP = MIN_TIMED_STEPS + 1


@dataclass
class AdaptLoop:
    """What one adaptation's training loop shares across tasks (per-task mode runs it per task)."""

    cfg: Config
    diffusion: DiscreteDiffusion
    device: torch.device
    logger: MetricsLogger
    bar: Progress
    job: Any
    step: int = 0  # optimiser steps so far, over every task
    clock: bool = False  # the bar counts seconds of a budget, not steps
    stop: StopSignals | None = None  # Ctrl-C ends the training early (arcdiff solve)

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.received is not None


def _with_rows(batch: Batch, rows: Tensor) -> Batch:
    """The batch with the stream's task numbers replaced by embedding rows."""
    return Batch(**{**vars(batch), "task": rows[batch.task]})


def train_steps(
    adapted: Adapted,
    tasks: Sequence[Task],
    loop: AdaptLoop,
    seed: int,
    label: str,
    steps: int,
    budget_s: float | None = None,
) -> int:
    """Train the trainable weights on the tasks' demonstration pairs: ``steps`` steps, or with
    ``budget_s`` as many as the clock allows, at most ``steps``: the rate of the first steps
    fixes where the learning-rate cosine ends (train/horizon.py), and steps past it take the
    floor rate. Returns the steps taken."""
    cfg, lora = loop.cfg, loop.cfg.lora
    model = adapted.model
    rows = model.task_embed
    new_rows = [rows.new_rows] if isinstance(rows, TaskRows) else []  # never decayed
    optimizer = make_optimizer(
        model, lora.lr, cfg.train.weight_decay, loop.device, no_decay=new_rows
    )
    warmup = max(1, steps // 10) if budget_s is None else min(CLOCK_WARMUP, max(1, steps // 10))
    minutes = None if budget_s is None else budget_s / 60
    horizon = Horizon(warmup, steps, minutes, cfg.train.lr_schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, horizon.factor)
    stream = TrainingStream(
        TaskSet("", (), {}),
        tasks,  # Task objects: demonstration pairs and test inputs, no test outputs
        max_size=cfg.data.max_size,
        eval_weight=1.0,
        augment=lora.augment,
        permute_background=cfg.data.permute_background,
        seed=seed,
        bucket_window=cfg.data.bucket_window,  # crops canvases as the base was trained, if it was
    )
    index = adapted.task_index
    task_rows = torch.tensor([index[t.id] for t in tasks], dtype=torch.long)
    # the coin and the corruption noise, on the model's device
    noise_gen = seeded_generator(loop.device, seed)
    take_step = TrainStep.from_config(
        cfg,
        model,
        optimizer,
        device=loop.device,
        diffusion=loop.diffusion,
        scheduler=scheduler,
        batch_field="lora.batch_size",
    )

    def draw(n: int) -> Batch:
        return _with_rows(stream.sample(n), task_rows)

    start = time.monotonic()
    taken = 0
    # by the clock, past the horizon at the floor learning rate if the steps ran faster than
    # the first ones (as the trainer does); without a budget the horizon is ``steps``
    while taken < steps and not loop.stopped:
        if horizon.due(taken):
            horizon.fix(taken, time.monotonic() - start, horizon.mean_step_s(), 0.0)
            loop.logger.log(loop.step, {"horizon_steps": loop.step + horizon.steps - taken})
        tic = time.monotonic()
        r = take_step(draw, lora.batch_size, noise_gen, noise_gen, loop.step, device=loop.device)
        horizon.time_step(time.monotonic() - tic)
        if not r.applied:
            raise TrainingError(f"adapting {label}: non-finite loss at step {loop.step}")
        loop.step += 1
        taken += 1
        metrics = {"loss": r.loss, **r.parts}
        metrics |= {"lr": scheduler.get_last_lr()[0], "grad_norm": r.grad_norm}
        loop.logger.log(loop.step, {**metrics, "task": label})
        info = f"{escape(label)} step {taken} loss {r.loss:.3f}"
        if loop.clock:
            loop.bar.update(loop.job, advance=time.monotonic() - tic, info=info)
        else:
            loop.bar.update(loop.job, advance=1, info=info)
        if budget_s is not None and time.monotonic() - start >= budget_s:
            break
    model.eval()
    return taken


def _rows_weight(model: nn.Module) -> nn.Parameter:
    """The parameter that holds the new tasks' rows."""
    rows = model.task_embed
    return rows.new_rows if isinstance(rows, TaskRows) else rows.weight


def train_staged(
    adapted: Adapted,
    tasks: Sequence[Task],
    loop: AdaptLoop,
    seed: int,
    label: str,
    budget_s: float | None = None,
) -> int:
    """``lora.embed_first`` of the steps (or of ``budget_s``) on the new task rows alone, then
    the rest on every weight the mode trains; returns the steps taken."""
    lora, model = loop.cfg.lora, adapted.model
    steps, taken = loop.cfg.lora.steps, 0
    if lora.embed_first > 0:
        start = time.monotonic()
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.requires_grad_(False)
        _rows_weight(model).requires_grad_(True)
        first = max(1, round(lora.embed_first * steps))
        first_s = None if budget_s is None else lora.embed_first * budget_s
        taken = train_steps(adapted, tasks, loop, seed, f"{label} rows", first, first_s)
        for p in trainable:
            p.requires_grad_(True)
        model.train()
        if budget_s is not None:
            budget_s = max(0.0, budget_s - (time.monotonic() - start))
        seed += 1_000_003  # the second stage draws other examples
    if taken < steps and (budget_s is None or budget_s > 0):
        taken += train_steps(adapted, tasks, loop, seed, label, steps - taken, budget_s)
    return taken


def adapt(
    base: LoadedRun,
    tasks: Sequence[Task],
    cfg: Config,
    log_dir: Path,
    *,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    budget_s: float | None = None,
    stop: StopSignals | None = None,
    title: str | None = None,
) -> Adapted:
    """Adapt ``base`` to ``tasks`` as ``cfg.lora`` says; the training log goes to ``log_dir``.

    ``tasks`` are :class:`Task` objects: the adaptation cannot see their test outputs.
    ``budget_s``: train by the clock (at most ``lora.steps`` steps per task; per-task mode
    divides it evenly); ``stop``: a signal received there ends the training early. ``title``
    labels the progress bar.
    """
    mode = cfg.lora.mode
    if not tasks:
        raise DataError("no tasks to adapt to")
    device = device or select_device()
    torch.manual_seed(cfg.train.seed)  # LoRA's initial A matrices
    adapted = prepare(base, adapted_task_ids(base.task_ids, tasks), cfg.lora, mode)
    adapted.model.to(device)
    runs = len(tasks) if mode == "per-task" else 1
    logger = MetricsLogger(log_dir, cfg)
    bar = progress_bar(title or f"adapt {mode}", console, progress, count=budget_s is None)
    with bar:
        total = runs * cfg.lora.steps if budget_s is None else budget_s
        job = bar.add_task(mode, total=total, info="")
        diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
        loop = AdaptLoop(cfg, diffusion, device, logger, bar, job, clock=budget_s is not None)
        loop.stop = stop
        if mode != "per-task":
            train_staged(adapted, tasks, loop, cfg.data.seed, mode, budget_s)
        else:
            assert adapted.peft_model is not None
            fresh = adapter_state(adapted.peft_model)
            start = time.monotonic()
            for k, task in enumerate(tasks):
                set_peft_model_state_dict(adapted.peft_model, fresh)
                share = None
                if budget_s is not None:  # what is left, shared by the tasks left
                    share = (budget_s - (time.monotonic() - start)) / (len(tasks) - k)
                train_staged(adapted, [task], loop, cfg.data.seed + k, task.id, share)
                adapted.adapters[task.id] = adapter_state(adapted.peft_model)
    logger.close()
    adapted.steps = loop.step
    return adapted
