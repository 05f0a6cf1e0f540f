"""Numbers over seeds: mean and standard deviation of a score, and a paired comparison of two
recipes run on the same seeds (a bootstrap over tasks of the per-seed difference).

A task is the unit: ARC scores are means over tasks, and two recipes evaluated on the same
tasks and seeds differ task by task. The paired statistic is the mean over seeds of the
difference in pass@2 (B - A), i.e. the mean over tasks of each task's seed-averaged difference;
its interval resamples tasks with replacement (Efron's percentile bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanSd:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of per-seed values."""

    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} +- {self.sd:.2g}"


def mean_sd(values: Sequence[float]) -> MeanSd:
    x = np.asarray(values, dtype=float)
    if not len(x):
        raise ValueError("no values")
    return MeanSd(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, len(x))


@dataclass(frozen=True)
class Paired:
    """B - A on the same seeds and tasks: the difference, its interval and a two-sided
    bootstrap p-value (how often the resampled difference lands on the other side of 0)."""

    diff: float
    low: float
    high: float
    p: float
    tasks: int
    seeds: int
    level: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def task_matrix(per_seed: Sequence[Mapping[str, float]], tasks: Sequence[str]) -> np.ndarray:
    """(seeds, tasks) scores; a task a seed did not score counts 0 (it was not answered)."""
    return np.array([[float(s.get(t, 0.0)) for t in tasks] for s in per_seed])


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, draws: int = 10_000, level: float = 0.95, seed: int = 0
) -> Paired:
    """Compare two (seeds, tasks) score matrices of the same seeds and tasks."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired scores need one shape (seeds, tasks): {a.shape} vs {b.shape}")
    per_task = (b - a).mean(axis=0)  # each task's difference, averaged over the seeds
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(per_task), size=(draws, len(per_task)))
    boot = per_task[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    diff = float(per_task.mean())
    if diff == 0 and not per_task.any():
        p = 1.0
    else:
        p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    return Paired(diff, float(low), float(high), p, a.shape[1], a.shape[0], level)
