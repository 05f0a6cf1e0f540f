"""``arcdiff lora``: adapt a base run in each asked mode, save, score and compare."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from arcdiff.adapt.compare import (
    BASELINE,
    ModeResult,
    comparison_table,
    join_comparison,
    score_adapted,
    write_scores,
)
from arcdiff.adapt.config import LORA_MODES, with_mode
from arcdiff.adapt.fit import adapt
from arcdiff.adapt.model import Adapted, adapted_task_ids, check_targets, prepare
from arcdiff.adapt.store import (
    MANIFEST,
    MERGE_PER_TASK,
    adapter_run_config,
    save_adapted,
    save_merged,
)
from arcdiff.config import Config
from arcdiff.data.tasks import TaskSet, load_tasks
from arcdiff.errors import CheckpointError, ConfigError, DataError, OutputError
from arcdiff.runs.banner import budget_text, device_text
from arcdiff.runs.checkpoint import LoadedRun
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.paths import select_device


def run_lora(
    base: LoadedRun,
    cfg: Config,
    source: str,
    *,
    modes: Sequence[str],
    names: Sequence[str],
    out: Path | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    merge: bool = False,
    evaluate: bool = True,
    baseline: bool = True,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[ModeResult]:
    """``arcdiff lora``: adapt ``base`` to ``source``'s tasks in each mode, save, score, compare.

    An adapter name that exists in ``out`` is refused (before any training) unless ``force``.

    With ``evaluate`` (and ``baseline``), the untrained model (new rows at their mean) is scored
    first; every adaptation then trains, saves to ``out/<name>/`` (default ``RUN/lora``) and is
    scored. The rows join those of earlier runs on the same source in ``out/comparison.json``
    (a name's new row replaces its old one); returns every row.
    """
    if BASELINE in names:
        raise ConfigError(f"--name: '{BASELINE}' is where the baseline's scores go; pick another")
    modes = [with_mode(cfg, m).lora.mode for m in modes]  # an unknown mode is a ConfigError
    if merge and "per-task" in modes:
        raise ConfigError(MERGE_PER_TASK)
    device = device or select_device()
    setup_cpu(cfg.train.threads, device)
    console = console or Console()
    out = out or base.run_dir / "lora"
    tasks = load_tasks(source, max_size=cfg.data.max_size, ids=ids, limit=limit)
    if not len(tasks):
        raise DataError(f"{source}: no tasks to adapt to (after the base's max_size filter)")
    if any(m in LORA_MODES for m in modes):
        check_targets(base.model, cfg.lora.target_modules)
    _check_names(out, names, force)
    task_ids = adapted_task_ids(base.task_ids, tasks.tasks)
    console.print(
        f"adapting {base.run_dir} (step {base.step}, {len(base.task_ids)} tasks) to "
        f"{len(tasks)} task(s) of {source}, {len(task_ids) - len(base.task_ids)} new; "
        f"{budget_text(cfg.lora.steps, None)} per mode on {device_text(device)}; adapters in "
        f"{out}"
    )
    scoring = {"device": device, "console": console, "progress": progress}
    results: list[ModeResult] = []
    if evaluate and baseline:
        untrained = prepare(base, task_ids, cfg.lora, "none")
        untrained.model.to(device).eval()
        tmp = _fresh(out / f".{BASELINE}.tmp")
        results.append(_score_into(tmp, BASELINE, untrained, base, tasks, cfg, 0, 0.0, **scoring))
        _replace_dir(tmp, out / BASELINE)
    for mode, name in zip(modes, names, strict=True):
        row = _adapt_mode(
            base, tasks, with_mode(cfg, mode), source, out / name, evaluate, merge, **scoring
        )
        results += [row] if row else []
    if not results:
        return results
    rows = join_comparison(out / "comparison.json", source, results)
    console.print(comparison_table(rows, source))
    return rows


def _adapt_mode(
    base: LoadedRun,
    tasks: TaskSet,
    cfg: Config,
    source: str,
    final: Path,
    evaluate: bool,
    merge: bool,
    **scoring: Any,
) -> ModeResult | None:
    """Adapt in ``cfg.lora.mode``, save into ``final`` (built beside it, then moved in place),
    score unless not ``evaluate``; the comparison row."""
    tmp = _fresh(final.with_name(f".{final.name}.tmp"))
    start = time.monotonic()
    adapted = adapt(base, tasks.tasks, cfg, tmp, **scoring)
    train_s = time.monotonic() - start
    save_adapted(adapted, tmp, cfg, base, source=source, tasks=tasks.tasks, train_s=train_s)
    row = None
    if evaluate:
        steps = (len(tasks) if cfg.lora.mode == "per-task" else 1) * cfg.lora.steps
        row = _score_into(tmp, final.name, adapted, base, tasks, cfg, steps, train_s, **scoring)
    if merge:
        save_merged(adapted, tmp / "merged", adapter_run_config(cfg, source, tasks.tasks), base)
    _replace_dir(tmp, final)
    scoring["console"].print(f"saved adapter {escape(str(final))}")
    return row


def _check_names(out: Path, names: Sequence[str], force: bool) -> None:
    """Before any training: a name whose folder exists is refused, unless it is an adapter
    and ``force`` says to replace it."""
    for name in names:
        folder = out / name
        if not folder.exists():
            continue
        if not (folder / MANIFEST).is_file():
            raise CheckpointError(f"{folder}: exists and is not an adapter; choose another --name")
        if not force:
            raise OutputError(
                f"{folder} already exists; pass --force to replace it or choose another --name"
            )


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished adapter directory into place (an old adapter of that name goes)."""
    if final.exists():
        if not (final / MANIFEST).is_file() and final.name != BASELINE:
            raise CheckpointError(f"{final}: exists and is not an adapter; choose another --name")
        shutil.rmtree(final)
    tmp.replace(final)


def _score_into(
    folder: Path,
    name: str,
    adapted: Adapted,
    base: LoadedRun,
    tasks: TaskSet,
    cfg: Config,
    steps: int,
    train_s: float,
    **scoring: Any,
) -> ModeResult:
    """Score ``adapted``, write ``folder/scores.json`` and return its comparison row."""
    test, demos, wall = score_adapted(adapted, base, tasks, cfg, folder, name, **scoring)
    lora = dataclasses.asdict(cfg.lora) if adapted.mode != "none" else {}
    row = ModeResult(
        name, adapted.mode, steps, train_s, wall, test["summary"], demos["summary"], lora
    )
    write_scores(folder, row, test, demos)
    return row
