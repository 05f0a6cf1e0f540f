"""Training an adaptation: ``lora.steps`` steps of train/step.py's TrainStep on the tasks'
demonstration pairs, a fresh augmentation per example; per-task mode runs it once per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft.utils import set_peft_model_state_dict
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from torch import Tensor

from arcdiff.adapt.config import BaseRun
from arcdiff.adapt.model import Adapted, TaskRows, adapted_task_ids, adapter_state, prepare
from arcdiff.config import Config
from arcdiff.console import progress_bar
from arcdiff.data.dataset import Batch, TrainingStream
from arcdiff.data.tasks import Task, TaskSet
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import DataError, TrainingError
from arcdiff.runs.device import fast_math, seeded_generator
from arcdiff.runs.paths import select_device
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.optim import lr_factor, make_optimizer
from arcdiff.train.step import TrainStep


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


def _with_rows(batch: Batch, rows: Tensor) -> Batch:
    """The batch with the stream's task numbers replaced by embedding rows."""
    return Batch(**{**vars(batch), "task": rows[batch.task]})


def train_steps(
    adapted: Adapted, tasks: Sequence[Task], loop: AdaptLoop, seed: int, label: str
) -> None:
    """Train the trainable weights ``lora.steps`` steps on the tasks' demonstration pairs."""
    cfg, lora = loop.cfg, loop.cfg.lora
    model = adapted.model
    rows = model.task_embed
    new_rows = [rows.new_rows] if isinstance(rows, TaskRows) else []  # never decayed
    optimizer = make_optimizer(
        model, lora.lr, cfg.train.weight_decay, loop.device, no_decay=new_rows
    )
    warmup, kind = max(1, lora.steps // 10), cfg.train.lr_schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, lora.steps, kind)
    )
    stream = TrainingStream(
        TaskSet("", (), {}),
        tasks,  # Task objects: demonstration pairs and test inputs, no test outputs
        max_size=cfg.data.max_size,
        eval_weight=1.0,
        augment=cfg.data.augment,
        permute_background=cfg.data.permute_background,
        seed=seed,
        bucket_window=cfg.data.bucket_window,  # crops canvases as the base was trained, if it was
    )
    index = adapted.task_index
    task_rows = torch.tensor([index[t.id] for t in tasks], dtype=torch.long)
    # the coin and the corruption noise, on the model's device
    noise_gen = seeded_generator(loop.device, seed)
    take_step = TrainStep(
        model=model,
        diffusion=loop.diffusion,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_clip=cfg.train.grad_clip,
        size_loss_weight=cfg.diffusion.size_loss_weight,
        self_cond_prob=cfg.train.self_cond_prob,
        autocast=lambda: fast_math(loop.device, cfg.train.bf16),  # bf16 + TF32 on CUDA only
    )

    def draw(n: int) -> Batch:
        return _with_rows(stream.sample(n), task_rows)

    for _ in range(lora.steps):
        r = take_step(draw, lora.batch_size, noise_gen, noise_gen, loop.step, device=loop.device)
        if not r.applied:
            raise TrainingError(f"adapting {label}: non-finite loss at step {loop.step}")
        loop.step += 1
        metrics = {"loss": r.loss, **r.parts}
        metrics |= {"lr": scheduler.get_last_lr()[0], "grad_norm": r.grad_norm}
        loop.logger.log(loop.step, {**metrics, "task": label})
        loop.bar.update(loop.job, advance=1, info=f"{escape(label)} loss {r.loss:.3f}")
    model.eval()


def adapt(
    base: BaseRun,
    tasks: Sequence[Task],
    cfg: Config,
    log_dir: Path,
    *,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> Adapted:
    """Adapt ``base`` to ``tasks`` as ``cfg.lora`` says; the training log goes to ``log_dir``.

    ``tasks`` are :class:`Task` objects: the adaptation cannot see their test outputs.
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
    bar = progress_bar(f"adapt {mode}", console, progress)
    with bar:
        job = bar.add_task(mode, total=runs * cfg.lora.steps, info="")
        diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
        loop = AdaptLoop(cfg, diffusion, device, logger, bar, job)
        if mode != "per-task":
            train_steps(adapted, tasks, loop, cfg.data.seed, mode)
        else:
            assert adapted.peft_model is not None
            fresh = adapter_state(adapted.peft_model)
            for k, task in enumerate(tasks):
                set_peft_model_state_dict(adapted.peft_model, fresh)
                train_steps(adapted, [task], loop, cfg.data.seed + k, task.id)
                adapted.adapters[task.id] = adapter_state(adapted.peft_model)
    logger.close()
    return adapted
