"""Evaluate a run: sample the split's test inputs, vote, score, write eval/<split>/."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from arcdiff.config import Config, EvalConfig, config_to_dict, load_config
from arcdiff.console import progress_bar
from arcdiff.data.holdout import excluded_ids
from arcdiff.data.tasks import Task, TaskSet, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import CheckpointError, DataError
from arcdiff.eval.predict import check_known, predict_options, predict_tasks
from arcdiff.eval.score import Predictions, predictions_json, score_split, submission
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import FROZEN_SECTIONS, first_difference, load_run
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.evals import check_existing, eval_dir, settings_tag, tagged_fields
from arcdiff.runs.faults import out_of_memory_names
from arcdiff.runs.lock import run_lock
from arcdiff.runs.paths import CONFIG, check_writable, checkpoint_path, select_device, write_json


def run_eval_settings(config_dir: Path, split: str) -> EvalConfig | None:
    """The evaluation a run's own config.json asks for (on ``split``); None without one."""
    path = config_dir / CONFIG
    if not path.is_file():
        return None
    return dataclasses.replace(load_config(path).eval, split=split)


def _check_config(cfg: Config, path: Path, config_dir: Path, expect: Config | None) -> None:
    """The checkpoint must match its run's config.json, and ``expect`` (the config with the
    user's --set overrides) must not ask for another model, diffusion or data section."""
    trained = config_to_dict(cfg)
    json_path = config_dir / "config.json"
    checks = []
    if json_path.is_file():
        checks.append(
            (config_to_dict(load_config(json_path)), f"{path} does not match {json_path}")
        )
    if expect is not None:
        checks.append((config_to_dict(expect), f"--set does not match the checkpoint {path}"))
    for wanted, message in checks:
        for section in FROZEN_SECTIONS:
            diff = first_difference(trained[section], wanted[section], f"{section}.")
            if diff:
                raise CheckpointError(
                    f"{message}: {diff} (evaluation uses the trained model's settings)"
                )


@dataclass(frozen=True)
class EvalModel:
    """What one evaluation samples with: ``predict`` has :func:`predict_tasks`'s signature
    without the model (diffusion, tasks, task_index, **settings), ``cfg`` is the config the
    model was trained with and ``out_root`` the folder whose ``eval/`` receives the scores."""

    predict: Callable[..., Predictions]
    cfg: Config
    task_ids: list[str]  # task id of each embedding row
    step: int
    out_root: Path
    adapter: str | None = None  # the adapter's name, recorded in scores.json


def run_eval_model(
    run_dir: Path,
    checkpoint: str,
    settings: EvalConfig,
    device: torch.device,
    expect: Config | None = None,
) -> EvalModel:
    """A run's own checkpoint, checked against its config.json and ``expect``; scores go to
    the run's ``eval/``."""
    run = load_run(run_dir, checkpoint, use_ema=settings.use_ema)
    _check_config(run.cfg, checkpoint_path(run_dir, checkpoint), run_dir, expect)
    predict = functools.partial(predict_tasks, run.model.to(device))
    return EvalModel(predict, run.cfg, run.task_ids, run.step, run_dir)


def predict_split(
    model: EvalModel,
    diffusion: DiscreteDiffusion,
    tasks: Sequence[Task],
    task_index: Mapping[str, int],
    settings: EvalConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
) -> Predictions:
    """Sample and vote ``tasks``' test inputs with ``model`` as ``settings`` say."""
    return model.predict(
        diffusion,
        tasks,
        task_index,
        **predict_options(settings),
        device=device,
        progress=progress,
        crop=model.cfg.data.bucket_window > 1,
    )


def evaluate_run(
    run_dir: Path,
    settings: EvalConfig,
    *,
    checkpoint: str = "final",
    model: EvalModel | None = None,
    tasks: TaskSet | None = None,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    out_name: str | None = None,
    expect: Config | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Predict, vote and score one split of a run as ``settings`` (an EvalConfig) say; returns
    and writes scores.json, predictions.json and submission.json.

    ``model``: what to sample with (default :func:`run_eval_model`, the run's ``checkpoint``);
    an adapted model (``arcdiff lora``, ``evaluate --adapter``) scores into its own
    ``out_root/eval/`` and leaves the base run's files as they are. ``tasks``: the tasks to
    score (default: ``settings.split`` with the run's data filters). ``out_name``: the folder
    under ``eval/`` (default: runs.evals.eval_dirname, tagged with the settings that differ
    from the run's config.json); scores made with other settings are not replaced unless
    ``force``. ``expect``: the config the caller resolved (with --set); a model, diffusion or
    data field that differs from the checkpoint is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    device = device or select_device()
    with run_lock(run_dir, "evaluate"), out_of_memory_names("eval.batch_size", settings.batch_size):
        if model is None:
            model = run_eval_model(run_dir, checkpoint, settings, device, expect)
        sampling_steps(model.cfg.diffusion.num_timesteps, settings.num_steps)  # a clear error
        console = console or Console()
        tasks = tasks or _split_tasks(model, settings, console)
        reference = run_eval_settings(model.out_root, settings.split) or settings
        tag = settings_tag(settings, reference)
        out = eval_dir(model.out_root, settings.split, checkpoint, tag)
        out = out.with_name(out_name) if out_name else out
        described = {**dataclasses.asdict(settings.sampled()), "checkpoint": checkpoint}
        check_existing(out, described, ["split", "checkpoint", *tagged_fields(settings)], force)
        check_writable(out)  # before the work, not after it
        return _evaluate(model, tasks, settings, out, described, device, console, progress)


def _split_tasks(model: EvalModel, settings: EvalConfig, console: Console) -> TaskSet:
    """``settings.split``'s tasks as the run was trained (its max_size and ids), less those it
    held out of training and has no row for (an adapter has rows for those it learned)."""
    cfg = model.cfg
    held_out = excluded_ids(cfg.data.exclude_ids) - set(model.task_ids)
    tasks = load_tasks(
        settings.split,
        max_size=cfg.data.max_size,
        ids=cfg.data.ids,
        limit=settings.limit,
        missing_ok=True,
        exclude=held_out,
    )
    if held_out:
        console.print(
            f"{len(held_out)} task(s) held out of training (data.exclude_ids) are not "
            "evaluated: `arcdiff solve --base RUN TASKS` answers them",
            markup=False,
        )
    if not len(tasks):
        raise DataError(
            f"{settings.split}: no tasks to evaluate (after the run's max_size "
            f"{cfg.data.max_size} and data.ids filters)"
        )
    return tasks


def _evaluate(
    model: EvalModel,
    tasks: TaskSet,
    settings: EvalConfig,
    out: Path,
    described: dict[str, Any],
    device: torch.device,
    console: Console,
    progress: bool,
) -> dict[str, Any]:
    task_index = {task_id: i for i, task_id in enumerate(model.task_ids)}
    check_known(tasks.tasks, task_index, tasks.name, model.out_root)
    setup_cpu(None, device)
    diffusion = DiscreteDiffusion.from_config(model.cfg.diffusion)
    if not console.is_terminal and progress:  # no bar in a log file: a line per phase
        console.print(f"sampling {len(tasks)} tasks of {tasks.name} into {out}", markup=False)
    start = time.monotonic()
    bar = progress_bar("sample", console, progress, info=False, unit="views")
    with bar:
        # test inputs only: outputs stay in tasks.solutions for the scorer
        predictions = predict_split(
            model, diffusion, tasks.tasks, task_index, settings, device=device, progress=bar
        )
    wall = time.monotonic() - start
    if not console.is_terminal and progress:
        console.print(f"sampled in {wall:.1f} s", markup=False)
    scores = score_split(predictions, tasks.tasks, tasks.solutions)
    scores["settings"] = {
        **described,
        "run": str(model.out_root),
        "device": str(device),
        "wall_s": wall,
        "step": model.step,
        "adapter": model.adapter,
        "folder": out.name,
    }
    write_json(out / "predictions.json", predictions_json(predictions))
    write_json(out / "submission.json", submission(predictions))
    write_json(out / "scores.json", scores)
    return scores


def quick_eval(cfg: Config, task_ids: list[str]) -> Callable[[Denoiser, int], dict[str, Any]]:
    """A callback for train(): pass@2 and oracle on the first ``train.quick_eval_tasks`` tasks
    of ``eval.split`` (one argmax view, 8 steps), so progress is visible while training."""
    settings = dataclasses.replace(
        cfg.eval,
        limit=cfg.train.quick_eval_tasks,
        num_steps=min(8, cfg.diffusion.num_timesteps),
        maj=False,
        sampler="argmax",
        samples=1,
        temperature=0.0,
        remask=False,
        ranking="vote",
    )
    tasks = load_tasks(
        settings.split, max_size=cfg.data.max_size, ids=cfg.data.ids, limit=settings.limit,
        missing_ok=True,
    )  # fmt: skip
    index = {task_id: i for i, task_id in enumerate(task_ids)}
    known = [t for t in tasks if t.id in index]
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)

    def run(model: Denoiser, step: int) -> dict[str, Any]:
        quick = EvalModel(functools.partial(predict_tasks, model), cfg, task_ids, step, Path("."))
        device = next(model.parameters()).device
        predictions = predict_split(quick, diffusion, known, index, settings, device=device)
        summary = score_split(predictions, known, tasks.solutions)["summary"]
        return {"quick_pass2": summary["pass@2"], "quick_oracle": summary["oracle"]}

    return run
