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
from arcdiff.console import progress_bar
from arcdiff.data.tasks import Grid, Task, TaskSet
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.score import score_split
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
    tasks: TaskSet,
    cfg: Config,
    *,
    device: torch.device,
    console: Console | None,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Scores on the test inputs (eval settings) and on the demonstration pairs (one identity
    sample each, no vote); returns both and the wall time."""
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    shared = {"num_steps": cfg.eval.num_steps, "batch_size": cfg.eval.batch_size}
    shared |= {"seed": cfg.eval.seed, "device": device, "crop": cfg.data.bucket_window > 1}
    shared |= {"size_vote": cfg.eval.size_vote, "size_prior": cfg.eval.size_prior}
    shared |= {"bf16": cfg.eval.bf16}
    demo_tasks, demo_truths = demonstration_split(tasks.tasks)
    start = time.monotonic()
    bar = progress_bar("sample", console, progress, info=False, unit="views")
    with bar:
        test = adapted.predict(
            diffusion,
            tasks.tasks,
            maj=cfg.eval.maj,
            num_augs=cfg.eval.num_augs,
            progress=bar,
            **shared,
        )
        # the demonstration prior would read each pair's own output: off for the fit measure
        demo_settings = shared | {"size_prior": False}
        demos = adapted.predict(diffusion, demo_tasks, maj=False, progress=bar, **demo_settings)
    wall = time.monotonic() - start
    test_scores = score_split(test, tasks.tasks, tasks.solutions)  # the only read of test outputs
    return test_scores, score_split(demos, demo_tasks, demo_truths), wall


def write_scores(out_dir: Path, result: ModeResult, test: dict, demos: dict, cfg: Config) -> None:
    """``out_dir/scores.json``: the comparison row, both scores and the settings they used."""
    keys = ("num_steps", "maj", "num_augs", "seed", "size_vote", "size_prior")
    settings = {k: getattr(cfg.eval, k) for k in keys}
    write_json(
        out_dir / "scores.json",
        {
            "result": dataclasses.asdict(result),
            "test": test,
            "demos": demos,
            "settings": {
                "test": settings,
                "demos": {**settings, "maj": False, "num_augs": 1, "size_prior": False},
            },
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
