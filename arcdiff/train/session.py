"""A training run's live state: the model, EMA, optimizer, schedule, data stream and random
generators that a checkpoint saves and a resume restores, and the step built from them."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from arcdiff.config import Config, config_to_dict
from arcdiff.data.dataset import TrainingStream, stream_from_config
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import build_model, checkpoint_state, load_state_strict
from arcdiff.runs.device import cuda_rng_state, restore_cuda_rng, seeded_generator
from arcdiff.train.distributed import Distributed
from arcdiff.train.horizon import Horizon
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.muon import load_optimizer_state
from arcdiff.train.optim import make_optimizer
from arcdiff.train.resume import check_resumable
from arcdiff.train.step import TrainStep


@dataclass
class Session:
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


def new_session(cfg: Config, ddp: Distributed) -> Session:
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
    horizon = Horizon.of_train(t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, horizon.factor)
    noise_gen = seeded_generator(ddp.device, noise_seed(t.seed, ddp.rank))
    coin_gen = seeded_generator("cpu", t.seed + 77)  # read on the host each step
    return Session(
        cfg, ddp, stream, model, ema, optimizer, scheduler, noise_gen, coin_gen, clock, horizon
    )


def train_step_for(s: Session) -> TrainStep:
    """The run's step: its model compiled (train.compile) and wrapped in DDP under torchrun."""
    t = s.cfg.train
    forward: nn.Module = torch.compile(s.model) if t.compile else s.model
    if s.ddp.enabled:
        forward = DistributedDataParallel(forward, find_unused_parameters=s.model.self_condition)
    return TrainStep.from_config(
        s.cfg,
        s.model,
        s.optimizer,
        device=s.ddp.device,
        scheduler=s.scheduler,
        ema=s.ema,
        forward=forward,
        mean=s.ddp.mean,
    )
