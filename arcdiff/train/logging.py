"""Run logging: metrics.jsonl always (runs/metrics.py), wandb when asked (offline unless the user
says otherwise)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from arcdiff.config import Config, config_to_dict
from arcdiff.runs.metrics import MetricsWriter
from arcdiff.runs.paths import metrics_rows, read_metrics

__all__ = ["MetricsLogger", "read_metrics"]


class MetricsLogger:
    """Appends one JSON object per call to ``run_dir/metrics.jsonl``; mirrors it to wandb.

    Only the process that should log (rank 0) creates one; other ranks pass ``enabled=False``.
    ``keep`` (a resumed run) keeps the rows the checkpoint had seen: its first ``rows`` rows,
    or for checkpoints that did not count them, the rows up to its ``step``; later rows were
    written after that checkpoint and are written again by the resumed run, so every step
    appears once. Without ``keep`` the file starts empty. ``rows`` counts the rows written.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: Config,
        *,
        enabled: bool = True,
        keep: tuple[int | None, int] | None = None,
    ):
        self.enabled = enabled
        self.file = MetricsWriter(run_dir)
        self.path = self.file.path
        self.wandb_run = None
        if not enabled:
            return
        self.file.restart(_kept_rows(self.path, *keep) if keep is not None else [])
        if cfg.train.wandb and cfg.train.wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb_run = wandb.init(
                project=cfg.train.wandb_project,
                name=cfg.name,
                dir=str(run_dir),
                mode=cfg.train.wandb_mode,
                config=config_to_dict(cfg),
                resume="allow",
                id=f"{cfg.name}-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}",
            )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = self.file.append({"step": step, **metrics})
        if self.wandb_run is not None:
            numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.wandb_run.log(numeric, step=step)

    @property
    def rows(self) -> int:
        """Rows in metrics.jsonl (the kept ones included): a checkpoint records them."""
        return self.file.rows

    def close(self) -> None:
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.finish()
            wandb.teardown()  # wait for wandb's service to write the run to disk
            self.wandb_run = None


def _kept_rows(path: Path, rows: int | None, step: int) -> list[bytes]:
    lines = metrics_rows(path)
    if rows is not None:
        return [line for line, _ in lines[:rows]]
    return [line for line, row in lines if row.get("step", 0) <= step]
