"""train -> evaluate -> report for one run directory (``arcdiff pipeline``).

The run directory decides what is left to do: a new one is trained, an interrupted one is
continued, a finished one is evaluated (if its own ``eval/<split>/`` is not there yet, or with
``force``) and reported. One lock on the run directory is held throughout.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
from rich.console import Console

from arcdiff.config import Config, load_config
from arcdiff.errors import CheckpointError, ResourceError
from arcdiff.eval.evaluate import evaluate_run, quick_eval
from arcdiff.model.denoiser import Denoiser
from arcdiff.report import write_report
from arcdiff.runs.evals import eval_dir
from arcdiff.runs.faults import out_of_memory_names
from arcdiff.runs.lock import run_lock
from arcdiff.runs.paths import CONFIG, checkpoint_path, checkpoints_dir
from arcdiff.train.distributed import Distributed
from arcdiff.train.resume import run_files
from arcdiff.train.trainer import TrainResult, train


def quick_eval_callback(cfg: Config) -> Callable[[Denoiser, int], dict[str, Any]] | None:
    """train()'s on_eval hook when train.quick_eval_every is set (pass@2 on a few tasks)."""
    if not cfg.train.quick_eval_every:
        return None
    from arcdiff.data.dataset import stream_from_config

    return quick_eval(cfg, stream_from_config(cfg.data).task_ids)


def train_run(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """:func:`train` under the run directory's lock. Out of memory is a ResourceError naming
    train.batch_size; a new run it stops before its first checkpoint leaves nothing behind."""
    with run_lock(run_dir, "train"):
        new = not run_files(run_dir)
        try:
            with out_of_memory_names("train.batch_size", cfg.train.batch_size):
                return train(
                    cfg,
                    run_dir,
                    resume=resume,
                    device=device,
                    progress=progress,
                    console=console,
                    on_eval=quick_eval_callback(cfg),
                )
        except ResourceError:
            if new:
                _remove_unstarted(run_dir)
            raise


def _remove_unstarted(run_dir: Path) -> None:
    """What a new run wrote before its first checkpoint (config.json, metrics.jsonl)."""
    ckpt_dir = checkpoints_dir(run_dir)
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        return
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    for name in ("config.json", "metrics.jsonl"):
        (run_dir / name).unlink(missing_ok=True)


def is_finished(run_dir: Path, cfg: Config) -> bool:
    """The run has its final checkpoint and ``cfg`` asks for no more training than it had."""
    if not checkpoint_path(run_dir, "final").is_file() or not (run_dir / CONFIG).is_file():
        return False
    saved = load_config(run_dir / CONFIG).train
    return (saved.max_steps, saved.max_minutes) == (cfg.train.max_steps, cfg.train.max_minutes)


@dataclass
class PipelineResult:
    trained: TrainResult | None  # None when the trained run was reused
    scores: dict[str, Any]
    report: Path
    evaluated: bool  # False when the run's own scores.json was reused


def run_pipeline(
    cfg: Config,
    run_dir: Path,
    *,
    skip_training: bool = False,
    force: bool = False,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> PipelineResult | None:
    """Train ``cfg`` into ``run_dir`` (a new run; an interrupted one continues, a finished one
    is reused), score ``cfg.eval.split`` with the config's evaluation settings into
    ``run_dir/eval/``, and write ``run_dir/report/``. The scores of a run that was not trained
    by this call are reused when its eval folder has them, unless ``force``.

    Under torchrun every rank trains; the ranks then meet (rank 0 has written final.pt) and
    rank 0 alone evaluates and reports; the others return None."""
    console = console or Console()
    if skip_training and not checkpoint_path(run_dir, "final").is_file():
        raise CheckpointError(
            f"{run_dir}: no trained run to reuse (no checkpoints/final.pt); "
            "drop --skip-training to train it"
        )
    ddp = Distributed(device)  # begun here, the group outlives the trainer for the barrier
    try:
        with run_lock(run_dir, "pipeline"):
            trained = _train_unless_finished(
                cfg, run_dir, skip_training, device, console, progress, speak=ddp.is_main
            )
            ddp.barrier()
            ddp.close()
            if not ddp.is_main:
                return None
            scores, evaluated = _evaluate(cfg, run_dir, trained, force, device, console, progress)
            return PipelineResult(trained, scores, write_report(run_dir), evaluated)
    finally:
        ddp.close()


def _train_unless_finished(
    cfg: Config,
    run_dir: Path,
    skip_training: bool,
    device: torch.device | None,
    console: Console,
    progress: bool,
    *,
    speak: bool,
) -> TrainResult | None:
    """Train or continue the run; None when it is finished. Only a ``speak``ing rank prints."""
    say = console if speak else Console(quiet=True)
    if skip_training or is_finished(run_dir, cfg):
        say.print(
            f"{run_dir} is trained: evaluating and reporting it", markup=False, soft_wrap=True
        )
        return None
    started = bool(run_files(run_dir))
    trained = train_run(
        cfg, run_dir, resume=started, device=device, progress=progress, console=console
    )
    say.print(f"trained {trained.step} steps ({trained.stop_reason})")
    return trained


def _evaluate(
    cfg: Config,
    run_dir: Path,
    trained: TrainResult | None,
    force: bool,
    device: torch.device | None,
    console: Console,
    progress: bool,
) -> tuple[dict[str, Any], bool]:
    """The scores of ``cfg.eval`` and whether they were computed (not reused) by this call."""
    scores_path = eval_dir(run_dir, cfg.eval.split) / "scores.json"
    if trained is None and not force and scores_path.is_file():
        console.print(
            f"{scores_path} is there: reusing it (--force evaluates again)",
            markup=False,
            soft_wrap=True,
        )
        return orjson.loads(scores_path.read_bytes()), False
    scores = evaluate_run(
        run_dir,
        cfg.eval,
        device=device,
        console=console,
        progress=progress,
        expect=cfg,
        force=force or trained is not None,
    )
    return scores, True
