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
from typing import Literal, Protocol

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


class Budget(Protocol):
    """What a horizon reads: a run's TrainConfig, or an adaptation's :class:`StepBudget`."""

    @property
    def warmup_steps(self) -> int: ...
    @property
    def max_steps(self) -> int: ...
    @property
    def max_minutes(self) -> float | None: ...
    @property
    def horizon_steps(self) -> int | None: ...
    @property
    def lr_schedule(self) -> Literal["cosine", "constant"]: ...
    @property
    def eval_every(self) -> int: ...


@dataclass(frozen=True)
class StepBudget:
    """A budget of steps and minutes without a validation (adaptation's training)."""

    warmup_steps: int
    max_steps: int
    max_minutes: float | None = None
    horizon_steps: int | None = None
    lr_schedule: Literal["cosine", "constant"] = "cosine"

    @property
    def eval_every(self) -> int:
        return self.max_steps  # no validation to leave time for


@dataclass
class Horizon:
    """The horizon of one run: fixed from the start (``train.horizon_steps``, or ``max_steps``
    without a clock budget) or estimated once the warmup has been timed."""

    train: Budget
    steps: int | None = None
    timed: list[float] = field(default_factory=list)  # seconds of the steps timed so far

    def __post_init__(self) -> None:
        if self.steps is None and self.train.horizon_steps is not None:
            self.steps = self.train.horizon_steps
        if self.steps is None and self.train.max_minutes is None:
            self.steps = self.train.max_steps

    @property
    def pending(self) -> bool:
        return self.steps is None

    def factor(self, step: int) -> float:
        """The learning-rate factor of ``step``. Until the horizon is fixed (at the end of the
        warmup, or a few steps later when the warmup is too short to time, or a run resumed
        just before its end) a step past the warmup takes the peak, where the cosine starts."""
        t = self.train
        if self.steps is None:
            return lr_factor(step, t.warmup_steps, step + 1, "constant")
        return lr_factor(step, t.warmup_steps, self.steps, t.lr_schedule)

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
        return (
            self.pending
            and step + 1 >= self.train.warmup_steps
            and len(self.timed) >= MIN_TIMED_STEPS
        )

    def mean_step_s(self) -> float:
        """Mean seconds of the timed steps but the first (which pays for lazy set-up)."""
        timed = self.timed[1:]
        return sum(timed) / len(timed)

    def fix(self, step: int, elapsed_s: float, step_s: float, val_s: float) -> int:
        """Estimate and freeze the horizon at ``step``, ``elapsed_s`` into the budget, for
        steps of ``step_s`` and validations of ``val_s`` seconds."""
        t = self.train
        assert t.max_minutes is not None  # pending only under a clock budget
        self.steps = estimate_horizon(
            step=step,
            step_s=step_s,
            remaining_s=t.max_minutes * 60 - elapsed_s,
            val_s=val_s,
            eval_every=t.eval_every,
            max_steps=t.max_steps,
        )
        return self.steps
