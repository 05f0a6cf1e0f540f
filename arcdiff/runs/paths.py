"""The layout of a run directory and what every command needs to find and write in one.

``outputs/<name>/``: ``config.json`` (the resolved config), ``metrics.jsonl`` (one row per
step), ``checkpoints/<name>.pt`` (``final``, ``best``, ``last``, ``step_*``, ``min_*``),
``eval/<split>[@checkpoint][~settings]/`` and ``report/``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch

import arcdiff
from arcdiff.errors import CheckpointError, ConfigError, DataError, OutputError, ResourceError

CHECKPOINTS = ("final", "best", "last")  # the checkpoints every finished run has
CONFIG = "config.json"
METRICS = "metrics.jsonl"


def checkpoints_dir(run_dir: Path) -> Path:
    """The folder of a run's checkpoints."""
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path, name: str = "final") -> Path:
    """``run_dir``'s checkpoint ``name`` (final, best, last, step_0000100, min_5)."""
    return checkpoints_dir(run_dir) / f"{name}.pt"


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


def write_json(path: Path, payload: Any) -> None:
    """Write indented JSON through a temporary file renamed into place; a failed write (disk
    full, say) raises the OSError and leaves ``path`` as it was, with no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """``folder`` can be created and written into: checked before a long job writes there.
    An OutputError names the folder and why not (not a folder, read-only)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    why = (
        f"{probe} is not a folder"
        if not probe.is_dir()
        else f"{probe} is read-only"
        if not os.access(probe, os.W_OK | os.X_OK)
        else ""
    )
    if why:
        raise OutputError(f"{folder}: cannot be written ({why}); nothing was sampled")


def metrics_rows(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """Each line with its row; a last line cut short (a killed run) is left out."""
    if not path.exists():
        return []
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append((line, orjson.loads(line)))
        except orjson.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return out


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` (none when there is no such file)."""
    return [row for _, row in metrics_rows(run_dir / METRICS)]


def code_version() -> str:
    """arcdiff's version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(arcdiff.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{arcdiff.__version__}+{sha}" if sha else arcdiff.__version__


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (a ConfigError if torch does not know it), else cuda, mps, cpu."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(
                f"--device {name!r}: not a device (expected cpu, cuda, cuda:N or mps)"
            ) from None
        _check_available(device)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device) -> None:
    """A device this torch build or machine lacks is a ResourceError naming --device."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "was built without CUDA" if torch.version.cuda is None else "sees no GPU"
            raise ResourceError(
                f"--device {device}: this torch ({torch.__version__}) {built}; "
                "use --device cpu (or leave --device out)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ResourceError(
                f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to "
                f"cuda:{count - 1})"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ResourceError(
                f"--device mps: not available to this torch ({torch.__version__}; MPS needs "
                "Apple silicon and a macOS build); use --device cpu (or leave --device out)"
            )
    elif device.type != "cpu":
        raise ConfigError(f"--device {device}: not supported (expected cpu, cuda, cuda:N or mps)")


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
class RunFiles:
    """A run directory as :func:`read_run` found it."""

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


def read_run(run_dir: Path) -> RunFiles:
    """What a run directory holds: config, metrics, evaluations, the checkpoints present.

    A missing directory, or one without any of them, is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    eval_dir = run_dir / "eval"
    ckpt_dir = checkpoints_dir(run_dir)
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
    return RunFiles(run_dir, _read_json(run_dir / "config.json"), metrics, evals, checkpoints)
