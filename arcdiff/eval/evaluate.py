"""Evaluate a run: sample the split's test inputs, vote, score, write eval/<split>/."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from arcdiff.config import Config
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import CheckpointError, DataError
from arcdiff.eval.sample import predict_tasks
from arcdiff.eval.score import predictions_json, score_split, submission
from arcdiff.model.denoiser import Denoiser
from arcdiff.train.device import select_device
from arcdiff.train.trainer import load_run_model

CHECKPOINTS = ("final", "best", "last")


@dataclass(frozen=True)
class EvalSettings:
    split: str
    num_steps: int = 32
    maj: bool = True
    num_augs: int = 8
    limit: int | None = None
    checkpoint: str = "final"
    use_ema: bool = True
    batch_size: int = 256
    seed: int = 0
    size_vote: bool = True
    size_prior: bool = True

    @classmethod
    def from_config(cls, cfg: Config, **given: Any) -> EvalSettings:
        """The config's eval section, with the options given (not None) on top."""
        fields = ("split", "num_steps", "maj", "num_augs", "limit", "use_ema", "batch_size")
        fields += ("seed", "size_vote", "size_prior")
        base = {name: getattr(cfg.eval, name) for name in fields}
        return cls(**{**base, **{k: v for k, v in given.items() if v is not None}})


def split_dirname(split: str) -> str:
    """'aa1:eval' -> 'aa1_eval'; a path -> its last component."""
    return Path(split.rstrip("/")).name.replace(":", "_") or "split"


def eval_dirname(split: str, checkpoint: str = "final") -> str:
    """Where one evaluation is written under ``eval/``: the split's name, with ``@checkpoint``
    for any checkpoint but ``final``, so scoring a snapshot never overwrites the final scores."""
    name = split_dirname(split)
    return name if checkpoint == "final" else f"{name}@{checkpoint}"


def latest_run(outputs: Path = Path("outputs")) -> Path:
    """The run directory under ``outputs`` whose newest checkpoint is the most recent."""
    newest: tuple[float, Path] | None = None
    for ckpt in outputs.glob("*/checkpoints/*.pt"):
        mtime = ckpt.stat().st_mtime
        if newest is None or mtime > newest[0]:
            newest = (mtime, ckpt.parent.parent)
    if newest is None:
        raise CheckpointError(f"no run with checkpoints under {outputs}/; train one or pass --run")
    return newest[1]


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)


def evaluate_run(
    run_dir: Path,
    settings: EvalSettings,
    *,
    adapter: str | None = None,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    out_name: str | None = None,
) -> dict[str, Any]:
    """Predict, vote and score one split of a run; returns and writes scores.json.

    ``adapter`` names a LoRA adapter of the run (``RUN/lora/NAME``): the base model with it,
    scored into the adapter's own ``eval/``; the base run's files stay as they are.
    ``out_name``: the folder under ``eval/`` (default :func:`eval_dirname`)."""
    device = device or select_device()
    if adapter is None:
        path = run_dir / "checkpoints" / f"{settings.checkpoint}.pt"
        if settings.checkpoint not in CHECKPOINTS and not path.is_file():
            saved = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
            raise CheckpointError(
                f"--checkpoint {settings.checkpoint}: no such checkpoint in {run_dir} "
                f"(has: {', '.join(saved) or 'none'})"
            )
        model, cfg, state = load_run_model(path, use_ema=settings.use_ema)
        predict, out_root = functools.partial(predict_tasks, model.to(device)), run_dir
    else:  # a LoRA adapter of this run (arcdiff lora): its tasks, scores in its own directory
        from arcdiff.train.lora import load_adapted

        loaded = load_adapted(run_dir, adapter, device=device)
        predict, cfg, out_root = loaded.adapted.predict, loaded.cfg, loaded.path
        state = {"task_ids": loaded.adapted.task_ids, "step": loaded.manifest["base_step"]}
    sampling_steps(cfg.diffusion.num_timesteps, settings.num_steps)  # a clear ConfigError first
    tasks = load_tasks(
        settings.split,
        max_size=cfg.data.max_size,
        ids=cfg.data.ids,  # a run trained on chosen tasks is evaluated on those
        limit=settings.limit,
        missing_ok=True,
    )
    if not len(tasks):
        raise DataError(
            f"{settings.split}: no tasks to evaluate (after the run's max_size "
            f"{cfg.data.max_size} and data.ids filters)"
        )
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    task_index = {task_id: i for i, task_id in enumerate(state["task_ids"])}
    start = time.monotonic()
    bar = Progress(
        TextColumn("[bold]sample"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )
    with bar:
        predictions = predict(
            diffusion,
            tasks.tasks,  # test inputs only: outputs stay in tasks.solutions for the scorer
            task_index,
            num_steps=settings.num_steps,
            maj=settings.maj,
            num_augs=settings.num_augs,
            batch_size=settings.batch_size,
            seed=settings.seed,
            device=device,
            progress=bar,
            crop=cfg.data.bucket_window > 1,
            size_vote=settings.size_vote,
            size_prior=settings.size_prior,
        )
    wall = time.monotonic() - start
    scores = score_split(predictions, tasks.tasks, tasks.solutions)
    scores["settings"] = {
        **vars(settings),
        "run": str(run_dir),
        "num_augs": settings.num_augs if settings.maj else 1,
        "device": str(device),
        "wall_s": wall,
        "step": state["step"],
        "adapter": adapter,
    }
    out = out_root / "eval" / (out_name or eval_dirname(settings.split, settings.checkpoint))
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "predictions.json", predictions_json(predictions))
    _write_json(out / "submission.json", submission(predictions))
    _write_json(out / "scores.json", scores)
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
        )
        summary = score_split(predictions, known, tasks.solutions)["summary"]
        return {"quick_pass2": summary["pass@2"], "quick_oracle": summary["oracle"]}

    return run
