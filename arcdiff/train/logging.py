"""Run logging: metrics.jsonl always, wandb when asked (offline unless the user says otherwise)."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import orjson

from arcdiff.config import Config, config_to_dict
from arcdiff.errors import OutputError
from arcdiff.runs.paths import metrics_rows
from arcdiff.runs.paths import read_metrics as read_metrics  # its callers' import path


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars -> floats; non-finite floats stay readable as strings."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = None
        self.rows = 0
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = _kept_rows(self.path, *keep) if keep is not None else []
        self.rows = len(kept)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            tmp.replace(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{self.path}: cannot write the metrics ({e.strerror})") from None
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
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        try:
            with open(self.path, "ab") as f:
                f.write(orjson.dumps(row) + b"\n")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot append metrics ({e.strerror})") from None
        self.rows += 1
        if self.wandb_run is not None:
            numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.wandb_run.log(numeric, step=step)

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
