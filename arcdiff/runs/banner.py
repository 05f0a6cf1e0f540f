"""The few lines a run starts with: what trains, for how long, where, and where it is written.

The whole resolved config is in ``RUN/config.json`` (and ``--verbose`` or ``arcdiff config
show`` print it as a tree); the banner keeps the lines a user needs on screen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.markup import escape

from arcdiff.config import Config


def budget_text(steps: int, minutes: float | None) -> str:
    """``1,000 steps`` or ``1,000 steps or 5 min``, whichever ends first."""
    return f"{steps:,} steps" + (f" or {minutes:g} min" if minutes else "")


def device_text(device: torch.device, world: int = 1) -> str:
    """``cpu, 2 thread(s)`` / ``cuda:0`` / ``cuda:0, world size 4`` (torchrun)."""
    text = str(device)
    if device.type == "cpu":
        text += f", {torch.get_num_threads()} thread(s)"
    return text + (f", world size {world}" if world > 1 else "")


def start_banner(
    cfg: Config,
    run_dir: Path,
    *,
    params: int,
    tasks: int,
    pairs: int,
    alone: int,
    device: torch.device,
    world: int,
    step: int,
) -> str:
    """Three lines: model and data; budget, start and device; the run directory."""
    t = cfg.train
    start = f"continuing at step {step:,}" if step else "from step 0"
    return "\n".join(
        (
            f"[bold]{escape(cfg.name)}[/]: {params:,} parameters, {tasks} tasks "
            f"({pairs:,} training pairs + {alone:,} grids alone)",
            f"budget {budget_text(t.max_steps, t.max_minutes)}, {start}; "
            f"device {device_text(device, world)}",
            f"run dir {escape(str(run_dir))} (the full config: config.json there, or --verbose)",
        )
    )
