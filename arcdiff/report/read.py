"""Reading a run directory for a report: config, metrics, evaluations, checkpoints present."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from arcdiff.errors import CheckpointError, DataError
from arcdiff.report.format import num
from arcdiff.runs.paths import CHECKPOINTS
from arcdiff.train.logging import read_metrics


@dataclass(frozen=True)
class SplitEval:
    """One eval/<split>/ folder; either file may be missing."""

    dirname: str
    scores: dict[str, Any] | None
    predictions: dict[str, Any] | None

    @property
    def split(self) -> str:
        settings = (self.scores or {}).get("settings") or {}
        return settings.get("split") or self.dirname


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    evals: list[SplitEval]
    checkpoints: list[str] = field(default_factory=list)  # names present, e.g. ["final", "last"]

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.path.name)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def read_run(run_dir: Path) -> Run:
    """Everything a report shows of a run directory; a missing directory is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    eval_dir = run_dir / "eval"
    ckpt_dir = run_dir / "checkpoints"
    if not any(
        p.exists() for p in (run_dir / "config.json", run_dir / "metrics.jsonl", eval_dir, ckpt_dir)
    ):
        raise CheckpointError(
            f"{run_dir}: not a run directory (no config.json, metrics.jsonl, checkpoints/ or eval/)"
        )
    try:
        metrics = read_metrics(run_dir)
    except orjson.JSONDecodeError as e:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: a line is not valid JSON ({e})") from None
    evals = [
        SplitEval(d.name, _read_json(d / "scores.json"), _read_json(d / "predictions.json"))
        for d in (sorted(eval_dir.iterdir()) if eval_dir.is_dir() else [])
        if d.is_dir()
    ]
    checkpoints = [n for n in CHECKPOINTS if (ckpt_dir / f"{n}.pt").is_file()]
    return Run(run_dir, _read_json(run_dir / "config.json"), metrics, evals, checkpoints)


def num_params(run: Run) -> int | None:
    """The parameter count a checkpoint records (memory-mapped: the tensors are not read)."""
    if not run.checkpoints:
        return None
    import torch

    path = run.path / "checkpoints" / f"{run.checkpoints[0]}.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    return state.get("num_params") if isinstance(state, dict) else None


def params_text(run: Run) -> tuple[str, str | None]:
    """The parameter count as text, and a note when the checkpoint cannot be read."""
    try:
        return num(num_params(run), "{:,}"), None
    except CheckpointError as e:
        return "unreadable", str(e)
