"""``arcdiff solve``: answer tasks a base run has never seen, with test-time training, in a budget.

Every task of the source gets two attempts per test input in ``submission.json`` (a competition
names every task). A task whose grids fit the base's canvas is answered by the base model after
test-time training on its demonstrations (adapt/fit.py; a new task gets a new row, a task the
base knows keeps its own); a larger one by the fallback attempts (the test input, then the
last demonstration's output), and so is a task left when Ctrl-C or the clock stops the work.

The budget covers training and sampling. Sampling is priced first: each task is sampled with one
denoising step and all with two (``probe``), and the price scaled to the evaluation's steps;
training leaves 1.5 times that price, and sampling slower than priced may overrun the deadline by
at most ``GRACE_S`` before the tasks left get the fallback. Joint mode
then trains one model on every task's demonstrations for the time left, and samples; per-task
mode trains a fresh copy of the base per task for an equal share of what is left (re-shared
after each task, so the last one gets its share) and samples it at once. Sampling uses the base
run's evaluation settings (``--set eval.x=...`` changes them); the test outputs, when the
source has them, are read by the scorer alone.

Writes to ``OUT``: submission.json, predictions.json (the model's candidates), solve.json (what
answered each task, steps, seconds), config.json, the training log(s), and with solutions
scores.json.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from arcdiff.adapt.fit import adapt
from arcdiff.adapt.model import Adapted, adapted_task_ids, prepare
from arcdiff.config import Config, EvalConfig, save_config
from arcdiff.console import progress_bar
from arcdiff.data.tasks import Grid, Task, TaskSet
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import ArcdiffError, ConfigError, DataError, OutputError
from arcdiff.eval.evaluate import EvalModel, predict_split
from arcdiff.eval.score import TestPrediction, predictions_json, score_split, submission
from arcdiff.eval.vote import Candidate
from arcdiff.runs.banner import device_text
from arcdiff.runs.checkpoint import LoadedRun
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.paths import write_json
from arcdiff.train.interrupt import StopSignals

MANIFEST = "solve.json"
MARGIN_S = 5.0  # kept back from the budget for writing the files
# the sampling price is a guess from short probes (what sampling then took ranged from 0.55x
# to 1.17x of it): training leaves this multiple of it, and sampling that still runs slower may
# go on past the deadline by GRACE_S before the tasks left get the fallback
SAFETY = 1.5
GRACE_S = 45.0
FALLBACK = "test input, then the last demonstration's output"
TOO_BIG = "too big"  # a grid larger than the base's canvas
STOPPED = "interrupted"  # Ctrl-C before the task was answered
OUT_OF_TIME = "out of time"
STOPPED_FALLBACK = f"fallback: {STOPPED}"


@dataclass
class TaskRecord:
    """How one task was answered (solve.json)."""

    answered_by: str = "model"  # or "fallback: <reason>"
    steps: int = 0
    train_s: float = 0.0
    sample_s: float = 0.0
    sample_estimate_s: float = 0.0


@dataclass
class Clock:
    """The budget's deadline and the sampling it still has to pay for."""

    deadline: float
    estimates: dict[str, float]  # task id -> sampling seconds still to pay
    ratio: float = 1.0  # measured / estimated sampling seconds so far
    _measured: list[tuple[float, float]] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def reserve(self) -> float:
        return SAFETY * self.ratio * sum(self.estimates.values()) + MARGIN_S

    def sampled(self, task_id: str, seconds: float) -> None:
        """A task was sampled in ``seconds``: the estimates of those left follow the ratio."""
        self._measured.append((self.estimates.pop(task_id), seconds))
        estimated = sum(e for e, _ in self._measured)
        if estimated > 0:
            self.ratio = sum(s for _, s in self._measured) / estimated


def fallback_prediction(task: Task, test: int) -> TestPrediction:
    """The attempts of a task the model does not answer: the test input, then the last
    demonstration's output."""
    first: Grid = task.test_inputs[test]
    second: Grid = task.demos[-1].output
    candidates = (Candidate(first, 0, 0.0), Candidate(second, 0, 0.0))
    return TestPrediction(candidates, first, second)


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
        raise OutputError(f"{out}: exists and is not a solve folder; choose another --out")
    if (out / MANIFEST).is_file() and not force:
        raise OutputError(f"{out} holds an earlier solve; pass --force to replace it")


def solve_tasks(
    base: LoadedRun,
    cfg: Config,
    tasks: TaskSet,
    *,
    minutes: float,
    out: Path,
    per_task: bool = False,
    device: torch.device,
    console: Console,
    progress: bool = True,
    force: bool = False,
    stop: StopSignals | None = None,
) -> dict[str, Any]:
    """Answer every task of ``tasks`` within ``minutes``; write ``out``; return solve.json."""
    start = time.monotonic()
    if minutes <= 0:
        raise ConfigError(f"--minutes {minutes:g}: the budget must be > 0")
    if not len(tasks):
        raise DataError(f"{tasks.name}: no tasks to solve")
    settings = cfg.eval
    sampling_steps(cfg.diffusion.num_timesteps, settings.num_steps)  # a clear ConfigError
    _check_out(out, force)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        return _solve(base, cfg, tasks, settings, minutes, out, per_task, device, console,
                      progress, stop or StopSignals(), start)  # fmt: skip
    except ArcdiffError:
        shutil.rmtree(out, ignore_errors=True)  # a user error leaves no half-written folder
        raise


def _solve(
    base: LoadedRun,
    cfg: Config,
    tasks: TaskSet,
    settings: EvalConfig,
    minutes: float,
    out: Path,
    per_task: bool,
    device: torch.device,
    console: Console,
    progress: bool,
    stop: StopSignals,
    start: float,
) -> dict[str, Any]:
    save_config(cfg, out / "config.json")
    setup_cpu(cfg.train.threads, device)

    fits = [t for t in tasks if t.max_side <= base.cfg.data.max_size]
    records = {t.id: TaskRecord() for t in tasks}
    for t in tasks:
        if t.max_side > base.cfg.data.max_size:
            records[t.id].answered_by = f"fallback: {TOO_BIG}"
    task_ids = adapted_task_ids(base.task_ids, fits)
    mode = cfg.lora.mode
    console.print(
        f"solving {len(tasks)} task(s) of {tasks.name} with {base.run_dir} (step {base.step}): "
        f"{len(fits)} fit its {base.cfg.data.max_size}x{base.cfg.data.max_size} canvas, "
        f"{len(task_ids) - len(base.task_ids)} new to it; {mode}, "
        f"{'one model per task' if per_task else 'one model for all'}, {minutes:g} minutes on "
        f"{device_text(device)}; into {out}",
        markup=False,
    )
    solver = _Solver(
        base, cfg, settings, DiscreteDiffusion.from_config(cfg.diffusion), device, console,
        progress, out, stop, Clock(start + minutes * 60, {}), records,
    )  # fmt: skip
    with stop:
        untrained = prepare(base, task_ids, cfg.lora, "none")
        untrained.model.to(device).eval()
        solver.clock.estimates = solver.probe(untrained, fits)
        for t in fits:
            records[t.id].sample_estimate_s = solver.clock.estimates[t.id]
        solver.per_task(fits) if per_task else solver.joint(fits)
    answers = solver.answers
    predictions = {
        t.id: answers.get(t.id) or [fallback_prediction(t, i) for i in range(len(t.test_inputs))]
        for t in tasks
    }
    for t in fits:
        if t.id not in answers and records[t.id].answered_by == "model":
            records[t.id].answered_by = (
                STOPPED_FALLBACK if stop.received else f"fallback: {OUT_OF_TIME}"
            )
    return _write(solver, tasks, predictions, minutes, start, per_task)


@dataclass
class _Solver:
    """One solve's state: the base, the settings, the clock and what is answered so far."""

    base: LoadedRun
    cfg: Config
    settings: EvalConfig
    diffusion: DiscreteDiffusion
    device: torch.device
    console: Console
    progress: bool
    out: Path
    stop: StopSignals
    clock: Clock
    records: dict[str, TaskRecord]
    answers: dict[str, list[TestPrediction]] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.stop.received is not None

    def _model(self, adapted: Adapted) -> EvalModel:
        """The adapted model as evaluation samples it (the base's canvas crop)."""
        return EvalModel(adapted.predict, self.cfg, adapted.task_ids, 0, Path("."))

    def probe(self, adapted: Adapted, tasks: Sequence[Task]) -> dict[str, float]:
        """Each task's sampling seconds: sampled with one denoising step, then (all tasks
        together) with two, which splits the time into a fixed part and a part per step; each
        task's one-step time is scaled to the evaluation's steps by that split."""
        model = self._model(adapted)

        def timed(steps: int, task: Task) -> float:
            tic = time.monotonic()
            settings = dataclasses.replace(self.settings, num_steps=steps)
            predict_split(
                model, self.diffusion, [task], adapted.task_index, settings, device=self.device
            )
            return time.monotonic() - tic

        one = {task.id: timed(1, task) for task in tasks}
        t1, t2 = sum(one.values()), sum(timed(2, task) for task in tasks)
        # two short timings are noisy: a step costs at least half the one-step time (measured:
        # sampling took 0.54-0.73 of the one-step price times the steps, quiet or shared)
        per_step = min(max(t2 - t1, 0.5 * t1), t1)
        scale = (t1 - per_step + self.settings.num_steps * per_step) / t1 if t1 > 0 else 1.0
        return {task_id: seconds * scale for task_id, seconds in one.items()}

    def sample(self, adapted: Adapted, tasks: Sequence[Task], label: str | None = None) -> None:
        """Sample each task in turn (Ctrl-C or the deadline stops between tasks)."""
        model = self._model(adapted)
        bar = progress_bar("sample", self.console, self.progress, unit="tasks")
        with bar:
            job = bar.add_task("sample", total=len(tasks), info="")
            for task in tasks:
                if self.stopped or self.clock.left() <= -GRACE_S:
                    return
                bar.update(job, info=escape(label or task.id))
                tic = time.monotonic()
                self.answers.update(
                    predict_split(
                        model,
                        self.diffusion,
                        [task],
                        adapted.task_index,
                        self.settings,
                        device=self.device,
                    )  # fmt: skip
                )
                seconds = time.monotonic() - tic
                self.records[task.id].sample_s = seconds
                self.clock.sampled(task.id, seconds)
                bar.advance(job)

    def _adapt(self, tasks: Sequence[Task], cfg: Config, log_dir: Path, **kw: Any) -> Adapted:
        tic = time.monotonic()
        adapted = adapt(
            self.base, tasks, cfg, log_dir, device=self.device, console=self.console,
            progress=self.progress, stop=self.stop, **kw,
        )  # fmt: skip
        for t in tasks:
            self.records[t.id].steps = adapted.steps
            self.records[t.id].train_s = time.monotonic() - tic
        return adapted

    def joint(self, tasks: Sequence[Task]) -> None:
        """One model trained on every task's demonstrations for the time left, then sampled."""
        if not tasks:
            return
        budget = self.clock.left() - self.clock.reserve()
        if budget <= 0:
            raise ConfigError(
                f"the budget leaves no time to train: sampling the {len(tasks)} task(s) alone "
                f"needs about {self.clock.reserve():.0f} s, {self.clock.left():.0f} s are "
                "left; give more --minutes or fewer eval.num_augs / eval.num_steps"
            )
        self.sample(self._adapt(tasks, self.cfg, self.out, budget_s=budget), tasks)

    def per_task(self, tasks: Sequence[Task]) -> None:
        """A fresh copy of the base per task, trained for its share of the time left, sampled."""
        cfg = self.cfg
        one = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, mode=_joint_mode(cfg)))
        for k, task in enumerate(tasks):
            if self.stopped or self.clock.left() <= 0:
                return
            share = (self.clock.left() - self.clock.reserve()) / (len(tasks) - k)
            label = f"task {k + 1}/{len(tasks)} {task.id}"
            if share > 0:
                log_dir = self.out / "tasks" / task.id
                adapted = self._adapt([task], one, log_dir, budget_s=share, title=f"adapt {label}")
            else:  # no time to train: the new row at the trained rows' mean
                ids = adapted_task_ids(self.base.task_ids, [task])
                adapted = prepare(self.base, ids, one.lora, "none")
                adapted.model.to(self.device).eval()
            self.sample(adapted, [task], label)


def _joint_mode(cfg: Config) -> str:
    """Per-task mode trains one copy per task: LoRA per task is the shared adapter per task."""
    return "shared" if cfg.lora.mode == "per-task" else cfg.lora.mode


def _write(
    solver: _Solver,
    tasks: TaskSet,
    predictions: dict[str, list[TestPrediction]],
    minutes: float,
    start: float,
    per_task: bool,
) -> dict[str, Any]:
    """submission.json, predictions.json, scores.json (with solutions) and solve.json."""
    out, base, cfg, answers, records = (
        solver.out,
        solver.base,
        solver.cfg,
        solver.answers,
        solver.records,
    )
    device_name = device_text(solver.device)
    write_json(out / "submission.json", submission(predictions))
    write_json(out / "predictions.json", predictions_json(answers))
    by = [r.answered_by for r in records.values()]
    spent = [r.train_s for r in records.values()]
    train_s = sum(spent) if per_task else max(spent, default=0.0)  # joint: one training
    manifest: dict[str, Any] = {
        "base_run": str(base.run_dir),
        "base_checkpoint": base.checkpoint,
        "base_step": base.step,
        "source": tasks.name,
        "mode": _joint_mode(cfg) if per_task else cfg.lora.mode,
        "per_task": per_task,
        "minutes": minutes,
        "tasks": len(tasks),
        "answered_by_model": by.count("model"),
        "fallback": {reason: by.count(reason) for reason in sorted(set(by) - {"model"})},
        "fallback_attempts": FALLBACK,
        "train_s": train_s,
        "sample_s": sum(r.sample_s for r in records.values()),
        "per_task_records": {k: dataclasses.asdict(r) for k, r in records.items()},
    }
    if any(s is not None for sols in tasks.solutions.values() for s in sols):
        # the only read of the test outputs
        scores = score_split(predictions, tasks.tasks, tasks.solutions)
        scores["settings"] = {**dataclasses.asdict(cfg.eval.sampled()), "solve": True}
        scores["settings"] |= {"split": tasks.name, "step": base.step, "run": str(base.run_dir)}
        scores["settings"] |= {"device": device_name, "wall_s": time.monotonic() - start}
        scores["solve"] = {k: v for k, v in manifest.items() if k != "per_task_records"}
        manifest["scores"] = scores["summary"]
    manifest["wall_s"] = time.monotonic() - start
    if "scores" in manifest:
        scores["solve"]["wall_s"] = manifest["wall_s"]
        write_json(out / "scores.json", scores)
    write_json(out / MANIFEST, manifest)
    return manifest


def describe(manifest: dict[str, Any]) -> str:
    """One line: how many tasks the model answered, the fallbacks, the time spent."""
    fallback = "; ".join(f"{n} {reason}" for reason, n in manifest["fallback"].items())
    return (
        f"{manifest['answered_by_model']} of {manifest['tasks']} task(s) answered by the model"
        + (f", {fallback} ({manifest['fallback_attempts']})" if fallback else "")
        + f"; {manifest['train_s']:.0f} s training, {manifest['sample_s']:.0f} s sampling, "
        f"{manifest['wall_s']:.0f} s in all of {manifest['minutes'] * 60:.0f} s"
    )
