"""Checkpoints: atomic save, strict load.

A checkpoint holds everything a run needs to continue exactly: model, EMA, optimizer, LR
schedule, step, RNG states (torch, numpy stream, python), the resolved config and the code
version. It is written to a temporary file in the same folder, flushed, then renamed over the
old one, so a crash mid-save leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arcdiff.errors import CheckpointError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


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


def first_difference(
    expected: dict[str, Any], found: dict[str, Any], prefix: str = ""
) -> str | None:
    """The first key (dotted) where two nested dicts differ, described; None if equal."""
    for key in sorted(set(expected) | set(found)):
        name = f"{prefix}{key}"
        if key not in found:
            return f"{name} is missing"
        if key not in expected:
            return f"{name} is unexpected"
        a, b = expected[key], found[key]
        if isinstance(a, dict) and isinstance(b, dict):
            inner = first_difference(a, b, f"{name}.")
            if inner:
                return inner
        elif a != b:
            return f"{name}: expected {a!r}, found {b!r}"
    return None


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
