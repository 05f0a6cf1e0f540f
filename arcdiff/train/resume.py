"""Where a training run starts: a new run directory, or the newest readable checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arcdiff.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from arcdiff.errors import CheckpointError, ConfigError, OutputError
from arcdiff.runs.checkpoint import (
    FROZEN_SECTIONS,
    differences,
    first_difference,
    newest_checkpoint,
)
from arcdiff.runs.paths import CONFIG, checkpoints_dir


def run_files(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to a training run (config, metrics, checkpoints)."""
    found = [name for name in ("config.json", "metrics.jsonl") if (run_dir / name).is_file()]
    ckpt_dir = checkpoints_dir(run_dir)
    if ckpt_dir.is_dir():
        found += sorted(f"checkpoints/{p.name}" for p in ckpt_dir.glob("*.pt"))
    return found


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and checkpoints/) or say in one line why it cannot be."""
    try:
        checkpoints_dir(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"{run_dir}: cannot create the run directory ({e.strerror or e})"
        ) from None


def start_state(
    run_dir: Path, resume: bool, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run continues from: None for a new run (or one killed before its
    first checkpoint). A new run never replaces files of an earlier one."""
    ckpt_dir = checkpoints_dir(run_dir)
    found = run_files(run_dir)
    if not resume:
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose "
                f"another --out (found {shown})"
            )
        return None
    for tmp in ckpt_dir.glob(".*.pt.tmp"):  # a save cut short by kill -9
        say(f"removed {tmp}, a checkpoint write that did not finish")
        tmp.unlink(missing_ok=True)
    newest = newest_checkpoint(ckpt_dir)
    if newest is None:
        unreadable = [f for f in found if f.endswith(".pt")]
        if unreadable:
            raise CheckpointError(
                f"{run_dir}: no readable checkpoint to resume ({', '.join(unreadable)} "
                "could not be read)"
            )
        if not found:
            raise CheckpointError(
                f"{ckpt_dir / 'last.pt'}: no such checkpoint (nor any step_*.pt) to resume"
            )
        say(f"{run_dir}: no checkpoint was saved yet; starting the run again from step 0")
        return None
    path, state, problems = newest
    for problem in problems:
        say(f"skipped {problem}")
    say(f"resuming from {path} (step {state['step']})")
    return path, state


def check_resumable(state: dict[str, Any], cfg: Config, task_ids: list[str], where: str) -> None:
    """The checkpoint was trained with this config's data, model and diffusion, on these tasks."""
    # through the loader, so fields added since the checkpoint was written take their defaults
    saved = config_to_dict(config_from_dict(state["config"], f"{where} (config)"))
    now = config_to_dict(cfg)
    for section in FROZEN_SECTIONS:
        diff = first_difference(saved[section], now[section], f"{section}.")
        if diff:
            raise CheckpointError(f"{where}: config differs from the checkpoint's: {diff}")
    if state.get("task_ids") != task_ids:
        raise CheckpointError(f"{where}: the checkpoint was trained on other tasks")


# What a resumed run may change (by --set, or a --config that differs from RUN/config.json):
# its budget, checkpointing, logging and CPU threads. Anything else would train another run.
RESUMABLE = frozenset(
    f"train.{name}"
    for name in (
        "max_steps",
        "max_minutes",
        "horizon_steps",
        "checkpoint_minutes",
        "save_every",
        "snapshot_minutes",
        "eval_every",
        "quick_eval_every",
        "quick_eval_tasks",
        "threads",
        "wandb",
        "wandb_project",
        "wandb_mode",
    )
)


def resume_config(
    run_dir: Path, config: str | None, overrides: Sequence[str]
) -> tuple[Config, str | None]:
    """The config an existing run continues with, and a note for the user (or None).

    ``RUN/config.json`` with ``overrides`` on top; an override outside RESUMABLE is a
    ConfigError naming every differing field. A ``config`` (--config) is not applied to an
    existing run: where it differs from config.json the note says so. Without a config.json
    (a run killed before it wrote one), ``config`` and ``overrides`` as given."""
    path = run_dir / CONFIG
    if not path.is_file():
        return load_config(config, overrides), None
    saved = load_config(path)
    cfg = apply_overrides(saved, overrides)
    changed = [
        text
        for key, text in differences(config_to_dict(saved), config_to_dict(cfg))
        if key not in RESUMABLE
    ]
    if changed:
        raise ConfigError(
            f"--set changes {len(changed)} field(s) of {path} that a run in progress cannot "
            f"change: {'; '.join(changed)}. A resume may change train.max_steps, max_minutes, "
            "checkpointing, logging and threads; start a new run with another --out for more"
        )
    note = None
    if config is not None:
        given = differences(config_to_dict(saved), config_to_dict(load_config(config)))
        given = [key for key, _ in given if key != "name"]
        if given:
            shown = ", ".join(given[:4]) + (", ..." if len(given) > 4 else "")
            note = (
                f"{run_dir} holds a run: it continues with its own {CONFIG}; --config {config} "
                f"differs in {len(given)} field(s) ({shown}) and is not applied (--set changes "
                "the budget)"
            )
    return cfg, note
