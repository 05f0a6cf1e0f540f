"""What a report reads of a run directory beyond runs.read_run: the parameter count."""

from __future__ import annotations

from arcdiff.errors import CheckpointError
from arcdiff.report.format import num
from arcdiff.runs.paths import RunFiles, SplitEval, checkpoint_path, read_run

__all__ = ["RunFiles", "SplitEval", "num_params", "params_text", "read_run"]


def num_params(run: RunFiles) -> int | None:
    """The parameter count a checkpoint records (memory-mapped: the tensors are not read)."""
    if not run.checkpoints:
        return None
    import torch

    path = checkpoint_path(run.path, run.checkpoints[0])
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    return state.get("num_params") if isinstance(state, dict) else None


def params_text(run: RunFiles) -> tuple[str, str | None]:
    """The parameter count as text, and a note when the checkpoint cannot be read."""
    try:
        return num(num_params(run), "{:,}"), None
    except CheckpointError as e:
        return "unreadable", str(e)
