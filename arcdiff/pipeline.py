"""train -> evaluate -> report for one run directory (``arcdiff pipeline``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from arcdiff.config import Config
from arcdiff.errors import CheckpointError
from arcdiff.eval.evaluate import EvalSettings, evaluate_run, quick_eval
from arcdiff.model.denoiser import Denoiser
from arcdiff.report import write_report
from arcdiff.train.trainer import TrainResult, train


def quick_eval_callback(cfg: Config) -> Callable[[Denoiser, int], dict[str, Any]] | None:
    """train()'s on_eval hook when train.quick_eval_every is set (pass@2 on a few tasks)."""
    if not cfg.train.quick_eval_every:
        return None
    from arcdiff.data.dataset import stream_from_config

    return quick_eval(cfg, stream_from_config(cfg.data).task_ids)


@dataclass
class PipelineResult:
    trained: TrainResult | None  # None when the trained run was reused
    scores: dict[str, Any]
    report: Path


def run_pipeline(
    cfg: Config,
    run_dir: Path,
    *,
    skip_training: bool = False,
    resume: bool = False,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> PipelineResult:
    """Train ``cfg`` into ``run_dir`` (or reuse it), score ``cfg.eval.split`` with the config's
    evaluation settings into ``run_dir/eval/``, and write ``run_dir/report/``."""
    console = console or Console()
    trained = None
    if not skip_training:
        trained = train(
            cfg,
            run_dir,
            resume=resume,
            device=device,
            progress=progress,
            console=console,
            on_eval=quick_eval_callback(cfg),
        )
        console.print(f"trained {trained.step} steps ({trained.stop_reason})")
    elif not (run_dir / "checkpoints").is_dir():
        raise CheckpointError(f"{run_dir}: no trained run to reuse (drop --skip-training)")
    scores = evaluate_run(
        run_dir,
        EvalSettings.from_config(cfg),
        device=device,
        console=console,
        progress=progress,
        expect=cfg,
    )
    return PipelineResult(trained, scores, write_report(run_dir))
