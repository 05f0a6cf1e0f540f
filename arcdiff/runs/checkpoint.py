"""Checkpoints: atomic save, strict load, one layout, the model rebuilt from the file alone.

A checkpoint holds everything a run needs to continue exactly: model, EMA, optimizer, LR
schedule, step, RNG states (torch, numpy stream, python), the resolved config and the code
version. It is written to a temporary file in the same folder, flushed, then renamed over the
old one, so a crash mid-save leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arcdiff.config import Config, config_from_dict
from arcdiff.errors import CheckpointError, OutputError
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.paths import checkpoint_path, code_version

# What a checkpoint was built and trained with: a resume, an evaluation or an adaptation of it
# must agree on these sections (train and eval may change).
FROZEN_SECTIONS = ("data", "model", "diffusion")
STEP_NAME = re.compile(r"step_(\d+)\.pt")


def _write_failure(e: BaseException) -> OSError | None:
    """The OSError behind a failed torch.save (torch wraps it in its writer's RuntimeError)."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to a temporary file, fsync it, then rename it over ``path``.

    A failed write (disk full, read-only, not a directory) is an OutputError naming the file;
    the previous checkpoint at ``path`` is left as it was and no temporary file remains.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        cause = _write_failure(e)
        if cause is None:
            raise
        kept = "its previous version is intact" if path.exists() else "earlier ones are intact"
        reason = cause.strerror or str(cause)
        raise OutputError(f"{path}: could not write the checkpoint ({reason}); {kept}") from None
    except BaseException:  # Ctrl-C or a kill signal mid-save: leave no half-written file
        tmp.unlink(missing_ok=True)
        raise


def resumable_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``last.pt`` and every ``step_*.pt`` in ``ckpt_dir``, highest saved step first.

    ``last.pt`` comes before a ``step_*.pt`` of the same step (they hold the same state)."""
    matches = [(STEP_NAME.fullmatch(p.name), p) for p in ckpt_dir.glob("step_*.pt")]
    named = sorted(((int(m.group(1)), p) for m, p in matches if m), reverse=True)
    last = ckpt_dir / "last.pt"
    return ([last] if last.is_file() else []) + [p for _, p in named]


def newest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The readable checkpoint among last.pt and step_*.pt with the highest step.

    Returns (path, state, problems): ``problems`` names every newer file that could not be
    read (a file cut short by a kill, say). None when there is no readable one."""
    best: tuple[Path, dict[str, Any]] | None = None
    problems: list[str] = []
    for path in resumable_checkpoints(ckpt_dir):
        m = STEP_NAME.fullmatch(path.name)
        if best is not None and m and int(m.group(1)) <= best[1]["step"]:
            break  # step files are sorted: none further is newer
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if best is None or state.get("step", -1) > best[1].get("step", -1):
            best = (path, state)
    return None if best is None else (best[0], best[1], problems)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; a missing or unreadable file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not an arcdiff checkpoint (no model/config entries)")
    return state


def differences(
    expected: dict[str, Any], found: dict[str, Any], prefix: str = ""
) -> list[tuple[str, str]]:
    """Every key (dotted) where two nested dicts differ, with a description, in key order."""
    out: list[tuple[str, str]] = []
    for key in sorted(set(expected) | set(found)):
        name = f"{prefix}{key}"
        if key not in found:
            out.append((name, f"{name} is missing"))
        elif key not in expected:
            out.append((name, f"{name} is unexpected"))
        elif isinstance(expected[key], dict) and isinstance(found[key], dict):
            out += differences(expected[key], found[key], f"{name}.")
        elif expected[key] != found[key]:
            out.append((name, f"{name}: expected {expected[key]!r}, found {found[key]!r}"))
    return out


def first_difference(
    expected: dict[str, Any], found: dict[str, Any], prefix: str = ""
) -> str | None:
    """The first key (dotted) where two nested dicts differ, described; None if equal."""
    found_all = differences(expected, found, prefix)
    return found_all[0][1] if found_all else None


def load_state_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Load every tensor or raise a CheckpointError naming the first differing key.

    Never a partial load: names and shapes are compared before anything is copied.
    """
    own = module.state_dict()
    for key in sorted(set(own) | set(state_dict)):
        if key not in state_dict:
            raise CheckpointError(f"{where}: parameter '{key}' is missing from the checkpoint")
        if key not in own:
            raise CheckpointError(f"{where}: unexpected parameter '{key}' in the checkpoint")
        if own[key].shape != state_dict[key].shape:
            raise CheckpointError(
                f"{where}: parameter '{key}' has shape {tuple(state_dict[key].shape)} in the "
                f"checkpoint but {tuple(own[key].shape)} in the model"
            )
    module.load_state_dict(state_dict, strict=True)


def checkpoint_state(
    *,
    model: nn.Module | dict[str, torch.Tensor],
    ema: nn.Module | dict[str, torch.Tensor],
    config: dict[str, Any],
    step: int,
    model_args: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The one layout of a checkpoint: weights, EMA weights, the resolved config, the step, the
    model's constructor arguments and the code version, plus what each writer adds (optimizer,
    scheduler and RNG states for training; the source run for a merged adapter)."""
    return {
        "model": model if isinstance(model, dict) else model.state_dict(),
        "ema": ema if isinstance(ema, dict) else ema.state_dict(),
        "config": config,
        "step": step,
        "model_args": model_args,
        **extra,
        "code_version": code_version(),
    }


def build_model(cfg: Config, num_tasks: int) -> Denoiser:
    return Denoiser.from_config(cfg.model, num_tasks=num_tasks, max_size=cfg.data.max_size)


def load_run_model(path: Path, *, use_ema: bool = True) -> tuple[Denoiser, Config, dict[str, Any]]:
    """Rebuild a model from a checkpoint file alone (config + model arguments inside)."""
    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"], f"{path} (config)")
        args = state["model_args"]
        model = build_model(cfg, args["num_tasks"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({e})") from None
    load_state_strict(model, state["ema" if use_ema else "model"], str(path))
    return model.eval(), cfg, state


@dataclass(frozen=True)
class LoadedRun:
    """A trained run's model (EMA weights unless asked otherwise), config and task index:
    what evaluation, adaptation and ``solve`` start from; the run is never written to."""

    run_dir: Path
    checkpoint: str  # final, best, last, or a snapshot / step name
    model: Denoiser
    cfg: Config
    task_ids: list[str]  # task id of each embedding row
    step: int


def load_run(run_dir: Path, checkpoint: str = "final", *, use_ema: bool = True) -> LoadedRun:
    """The one way to read a run's checkpoint; a missing run or checkpoint is a CheckpointError
    naming the checkpoints it has."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = checkpoint_path(run_dir, checkpoint)
    if not path.is_file():
        saved = sorted(p.stem for p in path.parent.glob("*.pt"))
        raise CheckpointError(
            f"{run_dir}: no checkpoints/{checkpoint}.pt, no such checkpoint "
            f"(has: {', '.join(saved) or 'none; train the run first'})"
        )
    model, cfg, state = load_run_model(path, use_ema=use_ema)
    return LoadedRun(run_dir, checkpoint, model, cfg, list(state["task_ids"]), int(state["step"]))
