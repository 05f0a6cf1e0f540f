"""Evaluate a run: sample the split's test inputs, vote, score, write eval/<split>/."""

from __future__ import annotations

import dataclasses
import functools
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
from rich.console import Console
from rich.progress import Progress

from arcdiff.config import Config, EvalConfig, config_to_dict, load_config
from arcdiff.console import progress_bar
from arcdiff.data.holdout import excluded_ids
from arcdiff.data.tasks import Task, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import CheckpointError, ConfigError, DataError, OutputError
from arcdiff.eval.predict import check_known, predict_tasks
from arcdiff.eval.rank import ranker_for
from arcdiff.eval.samplers import sampler_for
from arcdiff.eval.score import Predictions, predictions_json, score_split, submission
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import FROZEN_SECTIONS, first_difference, load_run_model
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.faults import out_of_memory_names
from arcdiff.runs.lock import run_lock
from arcdiff.runs.paths import CHECKPOINTS, check_writable, select_device, write_json

# settings that change what an evaluation predicts, with the short name of its folder's tag
TAGGED = {
    "num_steps": "steps",
    "maj": "maj",
    "num_augs": "augs",
    "limit": "limit",
    "use_ema": "ema",
    "seed": "seed",
    "size_vote": "sizevote",
    "size_prior": "sizeprior",
    "bf16": "bf16",  # changes the predictions on CUDA only
    "sampler": "",
    "samples": "samples",
    "temperature": "temp",
    "remask": "remask",
    "ranking": "",
    "visit_weight": "visits",
    "rank_top": "top",
}


SAMPLERS = typing.get_args(typing.get_type_hints(EvalConfig)["sampler"])
RANKINGS = typing.get_args(typing.get_type_hints(EvalConfig)["ranking"])


@dataclass(frozen=True)
class EvalSettings(EvalConfig):
    """One evaluation: a config's eval section (how to sample, vote and score) and the
    checkpoint it reads. A value the user can mistype is checked with the option's name."""

    checkpoint: str = "final"

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_augs", "limit", "batch_size", "samples", "rank_top"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} {value}: must be >= 1 (eval.{name} in a config)")
        for name, known in (("sampler", SAMPLERS), ("ranking", RANKINGS)):
            if getattr(self, name) not in known:
                raise ConfigError(
                    f"--{name} {getattr(self, name)}: must be one of {', '.join(known)} "
                    f"(eval.{name} in a config)"
                )
        if self.temperature < 0:
            raise ConfigError(f"--temperature {self.temperature}: must be >= 0 (eval.temperature)")
        super().__post_init__()

    @classmethod
    def from_config(cls, cfg: Config, **given: Any) -> EvalSettings:
        """The config's eval section, with the options given (not None) on top."""
        base = dataclasses.asdict(cfg.eval)
        return cls(**{**base, **{k: v for k, v in given.items() if v is not None}})


def split_dirname(split: str) -> str:
    """'aa1:eval' -> 'aa1_eval'; a path -> its last component."""
    return Path(split.rstrip("/")).name.replace(":", "_") or "split"


def sampled(settings: EvalSettings) -> EvalSettings:
    """The settings as sampled: without the vote (``maj`` off) there is one view."""
    return settings if settings.maj else dataclasses.replace(settings, num_augs=1)


def settings_tag(settings: EvalSettings, reference: EvalSettings) -> str:
    """The settings that differ from the run's own, e.g. ``steps1-limit1`` ('' if none), as
    sampled: ``--no-maj --num-augs 4`` samples one view and is tagged ``nomaj``."""
    settings, reference = sampled(settings), sampled(reference)
    parts = []
    for name, short in TAGGED.items():
        value = getattr(settings, name)
        if name == "num_augs" and not settings.maj:
            continue  # 'nomaj' says it
        if value != getattr(reference, name):
            parts.append(
                f"{short}{value}"
                if not isinstance(value, bool)
                else (short if value else f"no{short}")
            )
    return "-".join(parts)


def eval_dirname(split: str, checkpoint: str = "final", tag: str = "") -> str:
    """Where one evaluation is written under ``eval/``: the split's name, with ``@checkpoint``
    for any checkpoint but ``final`` and ``~tag`` for settings other than the run's own
    (:func:`settings_tag`), so a quick or a snapshot evaluation never replaces the run's
    scores."""
    name = split_dirname(split)
    name = name if checkpoint == "final" else f"{name}@{checkpoint}"
    return f"{name}~{tag}" if tag else name


def run_eval_settings(config_dir: Path, split: str) -> EvalSettings | None:
    """The evaluation a run's own config.json asks for (on ``split``); None without one."""
    path = config_dir / "config.json"
    if not path.is_file():
        return None
    return EvalSettings.from_config(load_config(path), split=split)


def _check_existing(out: Path, settings: dict[str, Any], force: bool) -> None:
    """Refuse to replace scores made with other settings, unless ``force``."""
    path = out / "scores.json"
    if force or not path.is_file():
        return
    try:
        saved = orjson.loads(path.read_bytes()).get("settings", {})
    except orjson.JSONDecodeError:
        saved = {}
    for name in ("split", "checkpoint", *TAGGED):
        if name in saved and saved[name] != settings[name]:
            raise OutputError(
                f"{out} holds scores made with {name}={saved[name]!r} (now {settings[name]!r}); "
                "pass --force to replace them"
            )


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
    run_dir: Path, settings: EvalSettings, device: torch.device, expect: Config | None = None
) -> EvalModel:
    """A run's own checkpoint (``settings.checkpoint``), checked against its config.json and
    ``expect``; scores go to the run's ``eval/``."""
    path = run_dir / "checkpoints" / f"{settings.checkpoint}.pt"
    if settings.checkpoint not in CHECKPOINTS and not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(
            f"--checkpoint {settings.checkpoint}: no such checkpoint in {run_dir} "
            f"(has: {', '.join(saved) or 'none'})"
        )
    model, cfg, state = load_run_model(path, use_ema=settings.use_ema)
    _check_config(cfg, path, run_dir, expect)
    predict = functools.partial(predict_tasks, model.to(device))
    return EvalModel(predict, cfg, state["task_ids"], state["step"], run_dir)


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
        num_steps=settings.num_steps,
        maj=settings.maj,
        num_augs=settings.num_augs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        device=device,
        progress=progress,
        crop=model.cfg.data.bucket_window > 1,
        size_vote=settings.size_vote,
        size_prior=settings.size_prior,
        bf16=settings.bf16,
        samples=settings.samples,
        draw=sampler_for(
            settings.sampler, temperature=settings.temperature, remask=settings.remask
        ),
        rank=ranker_for(
            settings.ranking,
            visit_weight=settings.visit_weight,
            top=settings.rank_top,
            batch_size=settings.batch_size,
            seed=settings.seed,
        ),
    )


def evaluate_run(
    run_dir: Path,
    settings: EvalSettings,
    *,
    model: EvalModel | None = None,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    out_name: str | None = None,
    expect: Config | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Predict, vote and score one split of a run; returns and writes scores.json.

    ``model``: what to sample with (default :func:`run_eval_model`, the run's own checkpoint);
    one with a LoRA adapter of the run (``arcdiff evaluate --adapter``) scores into the
    adapter's own ``eval/`` and leaves the base run's files as they are.
    ``out_name``: the folder under ``eval/`` (default :func:`eval_dirname`, tagged with the
    settings that differ from the run's config.json). Scores made with other settings are
    not replaced unless ``force``. ``expect``: the config the caller resolved (with --set);
    a model, diffusion or data field that differs from the checkpoint is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    with run_lock(run_dir, "evaluate"), out_of_memory_names("eval.batch_size", settings.batch_size):
        return _evaluate(
            run_dir,
            settings,
            model=model,
            device=device or select_device(),
            console=console or Console(),
            progress=progress,
            out_name=out_name,
            expect=expect,
            force=force,
        )


def _evaluate(
    run_dir: Path,
    settings: EvalSettings,
    *,
    model: EvalModel | None,
    device: torch.device,
    console: Console,
    progress: bool,
    out_name: str | None,
    expect: Config | None,
    force: bool,
) -> dict[str, Any]:
    if model is None:
        model = run_eval_model(run_dir, settings, device, expect)
    cfg, out_root = model.cfg, model.out_root
    sampling_steps(cfg.diffusion.num_timesteps, settings.num_steps)  # a clear ConfigError first
    # held out of training and given no row since (an adapter has rows for those it learned)
    held_out = excluded_ids(cfg.data.exclude_ids) - set(model.task_ids)
    tasks = load_tasks(
        settings.split,
        max_size=cfg.data.max_size,
        ids=cfg.data.ids,  # a run trained on chosen tasks is evaluated on those
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
    reference = run_eval_settings(out_root, settings.split) or settings
    tag = settings_tag(settings, reference)
    out = out_root / "eval" / (out_name or eval_dirname(settings.split, settings.checkpoint, tag))
    described = vars(sampled(settings))
    _check_existing(out, described, force)
    check_writable(out)  # before the work, not after it
    task_index = {task_id: i for i, task_id in enumerate(model.task_ids)}
    check_known(tasks.tasks, task_index, settings.split, run_dir)
    setup_cpu(None, device)
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    if not console.is_terminal and progress:  # no bar in a log file: a line per phase
        console.print(f"sampling {len(tasks)} tasks of {settings.split} into {out}", markup=False)
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
        "run": str(run_dir),
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
    of ``eval.split`` (no vote, 8 steps), so progress is visible while training."""
    tasks = load_tasks(
        cfg.eval.split,
        max_size=cfg.data.max_size,
        ids=cfg.data.ids,
        limit=cfg.train.quick_eval_tasks,
        missing_ok=True,
    )
    index = {task_id: i for i, task_id in enumerate(task_ids)}
    known = [t for t in tasks if t.id in index]
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)

    def run(model: Denoiser, step: int) -> dict[str, Any]:
        predictions = predict_tasks(
            model,
            diffusion,
            known,
            index,
            num_steps=min(8, diffusion.num_timesteps),
            maj=False,
            crop=cfg.data.bucket_window > 1,
            size_vote=cfg.eval.size_vote,
            size_prior=cfg.eval.size_prior,
            bf16=cfg.eval.bf16,
        )
        summary = score_split(predictions, known, tasks.solutions)["summary"]
        return {"quick_pass2": summary["pass@2"], "quick_oracle": summary["oracle"]}

    return run
