"""Scoring adaptations and the comparison of them: scores.json per adapter, comparison.json
and the table of the baseline against each adaptation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from arcdiff.adapt.model import Adapted
from arcdiff.config import Config
from arcdiff.data.tasks import Grid, Task, TaskSet
from arcdiff.eval.evaluate import EvalModel, evaluate_run
from arcdiff.runs.checkpoint import LoadedRun
from arcdiff.runs.paths import write_json

BASELINE = "baseline"  # scores of the untrained model (new rows at their mean, no adapter)


def demonstration_split(tasks: Sequence[Task]) -> tuple[list[Task], dict[str, tuple[Grid, ...]]]:
    """Each task with its demonstration inputs as test inputs, and their outputs as truths."""
    as_tests = [dataclasses.replace(t, test_inputs=tuple(p.input for p in t.demos)) for t in tasks]
    return as_tests, {t.id: tuple(p.output for p in t.demos) for t in tasks}


@dataclass(frozen=True)
class ModeResult:
    """One row of the comparison: an adaptation (or the baseline) and its scores."""

    name: str
    mode: str
    steps: int  # optimiser steps in all (per-task: steps x tasks)
    train_s: float
    eval_s: float
    test: dict[str, Any]  # score_split summary on the tasks' test inputs
    demos: dict[str, Any]  # score_split summary on their demonstration pairs: a fit measure
    lora: dict[str, Any] = field(default_factory=dict)  # the lora section it trained with


def score_adapted(
    adapted: Adapted,
    base: LoadedRun,
    tasks: TaskSet,
    cfg: Config,
    folder: Path,
    name: str,
    *,
    device: torch.device,
    console: Console | None,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Score ``adapted`` as evaluation scores any model (:func:`evaluate_run` with the run's
    eval settings: sampler, draws, ranking), into ``folder/eval/<split>/``, and on the
    demonstration pairs (one identity sample each, no vote, no size prior: a fit measure) into
    ``folder/eval/demos/``; returns both scores and the wall time."""
    model = EvalModel(adapted.predict, cfg, adapted.task_ids, base.step, folder, adapter=name)
    settings = dataclasses.replace(cfg.eval, split=tasks.name, limit=None)
    demo_tasks, demo_truths = demonstration_split(tasks.tasks)
    demos = TaskSet(f"{tasks.name} (demonstrations)", tuple(demo_tasks), demo_truths)
    run = {"model": model, "device": device, "console": console, "progress": progress}
    start = time.monotonic()
    test_scores = evaluate_run(base.run_dir, settings, tasks=tasks, force=True, **run)
    # the demonstration prior would read each pair's own output: off for the fit measure
    fit = dataclasses.replace(settings, maj=False, size_prior=False)
    demo_scores = evaluate_run(base.run_dir, fit, tasks=demos, out_name="demos", force=True, **run)
    return test_scores, demo_scores, time.monotonic() - start


def write_scores(out_dir: Path, result: ModeResult, test: dict, demos: dict) -> None:
    """``out_dir/scores.json``: the comparison row, both scores and the settings they used."""
    write_json(
        out_dir / "scores.json",
        {
            "result": dataclasses.asdict(result),
            "test": test,
            "demos": demos,
            "settings": {"test": test["settings"], "demos": demos["settings"]},
        },
    )


def join_comparison(path: Path, source: str, results: Sequence[ModeResult]) -> list[ModeResult]:
    """Earlier rows of ``path`` for the same source, updated by name with ``results``; saved."""
    rows: dict[str, ModeResult] = {}
    if path.is_file():
        saved = orjson.loads(path.read_bytes())
        if saved.get("source") == source:
            rows = {r["name"]: ModeResult(**r) for r in saved["rows"]}
    rows |= {r.name: r for r in results}
    ordered = sorted(rows.values(), key=lambda r: r.name != BASELINE)  # the baseline first
    write_json(path, {"source": source, "rows": [dataclasses.asdict(r) for r in ordered]})
    return ordered


TABLE_CAPTION = (
    "pass@2 / oracle: the tasks' test inputs solved by one of the 2 voted attempts / by any "
    "candidate, mean over tasks. size: attempt 1 has the right size; cells: its cells right, "
    "over those of the right size. demo exact / cells: attempt 1 (one identity sample, no vote) "
    "exactly right / its cells right (right size only) on the tasks' own demonstration pairs, "
    "the pairs the adaptation trained on: a fit measure, not generalisation. baseline: new task "
    "rows at the mean of the trained rows, no training. steps: optimiser steps in all."
)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def comparison_table(results: Sequence[ModeResult], source: str) -> Table:
    """Baseline vs each adaptation on the adapted tasks (the caption defines the columns)."""
    table = Table(
        title=f"LoRA adaptation: {escape(source)} (scores in %)",
        caption=TABLE_CAPTION,
        box=box.SIMPLE,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("adapter", no_wrap=True)
    for name in ("steps", "pass@2", "oracle", "size", "cells", "demo\nexact", "demo\ncells"):
        table.add_column(name, justify="right")
    table.add_column("train\ns", justify="right")
    table.add_column("eval\ns", justify="right")
    for r in results:
        label = r.name if r.name == r.mode or r.mode == "none" else f"{r.name} ({r.mode})"
        table.add_row(
            escape(label),
            str(r.steps),
            _pct(r.test.get("pass@2")),
            _pct(r.test.get("oracle")),
            _pct(r.test.get("size_accuracy")),
            _pct(r.test.get("cell_accuracy")),
            _pct(r.demos.get("pass@1")),
            _pct(r.demos.get("cell_accuracy")),
            f"{r.train_s:.0f}",
            f"{r.eval_s:.0f}",
        )
    return table
