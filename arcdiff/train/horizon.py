"""Where a run's learning-rate schedule ends, and how a clock budget fixes it once.

A run budgeted by ``train.max_minutes`` still anneals its learning rate within the budget, but
as a function of the step alone: at the end of the warmup the trainer measures its step rate,
estimates the steps the rest of the budget buys (less the validations it will run), and freezes
that horizon. It is saved in every later checkpoint and in the run's config.json
(``train.horizon_steps``), so a resumed run keeps it and ``--set train.horizon_steps=H`` (or the
run's config.json) repeats the run step for step. The run still stops by the clock: a slower
machine stops short of the horizon (the cosine is flat near its end), a faster one trains on at
the floor learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from arcdiff.config import TrainConfig
from arcdiff.train.optim import lr_factor

MIN_TIMED_STEPS = 3  # steps timed (the first, which pays for lazy set-up, is left out) to estimate


def estimate_horizon(
    *,
    step: int,
    step_s: float,
    remaining_s: float,
    val_s: float,
    eval_every: int,
    max_steps: int,
) -> int:
    """The step at which the budget runs out: ``remaining_s`` (less one closing validation of
    ``val_s``) spent on steps of ``step_s`` with a validation every ``eval_every`` steps; at
    least one step on, at most ``max_steps``."""
    per_step = step_s + val_s / eval_every
    more = math.floor(max(0.0, remaining_s - val_s) / per_step) if per_step > 0 else max_steps
    return int(min(max_steps, max(step + 1, step + more)))


@dataclass
class Horizon:
    """The horizon of one run: fixed from the start (``steps``, or ``max_steps`` without a
    clock budget of ``max_minutes``) or estimated once the warmup has been timed. The schedule
    itself is :func:`lr_factor` of the step; ``eval_every`` (0: none) leaves time for the
    validations a budget must also pay for."""

    warmup: int
    max_steps: int
    max_minutes: float | None = None
    schedule: Literal["cosine", "constant"] = "cosine"
    eval_every: int = 0
    steps: int | None = None
    timed: list[float] = field(default_factory=list)  # seconds of the steps timed so far

    @classmethod
    def of_train(cls, t: TrainConfig) -> Horizon:
        """A run's horizon: ``train.horizon_steps`` if set (a resumed or repeated run)."""
        return cls(
            t.warmup_steps, t.max_steps, t.max_minutes, t.lr_schedule, t.eval_every, t.horizon_steps
        )

    def __post_init__(self) -> None:
        if self.steps is None and self.max_minutes is None:
            self.steps = self.max_steps

    @property
    def pending(self) -> bool:
        return self.steps is None

    def factor(self, step: int) -> float:
        """The learning-rate factor of ``step``. Until the horizon is fixed (at the end of the
        warmup, or a few steps later when the warmup is too short to time, or a run resumed
        just before its end) a step past the warmup takes the peak, where the cosine starts."""
        if self.steps is None:
            return lr_factor(step, self.warmup, step + 1, "constant")
        return lr_factor(step, self.warmup, self.steps, self.schedule)

    def retime(self) -> None:
        """Forget the steps timed so far (the run changed its threads): a horizon not fixed
        yet is estimated from the steps that follow, the learning rate held at its peak."""
        self.timed.clear()

    def time_step(self, seconds: float) -> None:
        if self.pending:
            self.timed.append(seconds)

    def due(self, step: int) -> bool:
        """Whether to fix the horizon before taking ``step``: the next update's learning rate
        is the first past the warmup, and enough steps have been timed."""
        return self.pending and step + 1 >= self.warmup and len(self.timed) >= MIN_TIMED_STEPS

    def mean_step_s(self) -> float:
        """Mean seconds of the timed steps but the first (which pays for lazy set-up)."""
        timed = self.timed[1:]
        return sum(timed) / len(timed)

    def fix(self, step: int, elapsed_s: float, step_s: float, val_s: float) -> int:
        """Estimate and freeze the horizon at ``step``, ``elapsed_s`` into the budget, for
        steps of ``step_s`` and validations of ``val_s`` seconds."""
        assert self.max_minutes is not None  # pending only under a clock budget
        self.steps = estimate_horizon(
            step=step,
            step_s=step_s,
            remaining_s=self.max_minutes * 60 - elapsed_s,
            val_s=val_s,
            eval_every=self.eval_every or self.max_steps,  # none: val_s is 0
            max_steps=self.max_steps,
        )
        return self.steps
