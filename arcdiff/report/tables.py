"""Rich tables for the terminal: an evaluation's scores, its tasks, and runs side by side."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from arcdiff.report.format import mark, pct
from arcdiff.report.read import params_text, read_run
from arcdiff.report.rows import sorted_tasks, summary_rows, training_rows


def summary_table(scores: dict[str, Any]) -> Table:
    """An evaluation's scores and settings, one line each."""
    st = scores.get("settings") or {}
    table = Table(title=escape(f"scores: {st.get('split', '?')}"), show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in summary_rows(scores):
        style = "bold green" if label == "pass@2" else None
        table.add_row(label, value, style=style)
    return table


def per_task_table(scores: dict[str, Any]) -> Table:
    """One row per scored task, solved ones first."""
    per_task = scores.get("per_task") or {}
    solved = sum(t.get("pass2") == 1.0 for t in per_task.values())
    table = Table(title=f"{solved} of {len(per_task)} task(s) solved")
    for name in ("", "task", "tests", "pass@1", "pass@2", "oracle", "size ok", "cell acc"):
        table.add_column(name, justify="left" if name in ("", "task") else "right")
    for task_id in sorted_tasks(scores, None):
        t = per_task[task_id]
        solved_mark = mark(t.get("pass2"))
        table.add_row(
            f"[green]{solved_mark}[/]" if solved_mark == "✓" else solved_mark,
            escape(task_id),
            str(t.get("test_inputs", "—")),
            *(pct(t.get(k)) for k in ("pass1", "pass2", "oracle", "size_ok", "cell_acc")),
        )
    return table


def compare_table(run_dirs: list[Path]) -> Table:
    """Runs side by side, one column each: config, size, training and every evaluated split."""
    runs = [read_run(Path(d)) for d in run_dirs]
    table = Table(title="runs", show_lines=False)
    table.add_column("", style="bold")
    for run in runs:
        table.add_column(escape(str(run.path)), justify="right")

    def row(label: str, values: Iterable[str]) -> None:
        table.add_row(label, *values)

    row("config", (escape(r.name) for r in runs))
    row("parameters", (params_text(r)[0] for r in runs))
    training = [dict(training_rows(r.metrics)) if r.metrics else {} for r in runs]
    for label in ("steps", "train loss (mean of last 10)", "val loss / acc"):
        row(label, (escape(t.get(label, "—")) for t in training))
    splits = list(dict.fromkeys(e.split for r in runs for e in r.evals))
    for split in splits:
        table.add_section()
        per_run = [
            next(
                (dict(summary_rows(e.scores)) for e in r.evals if e.split == split and e.scores), {}
            )
            for r in runs
        ]
        table.add_row(f"[cyan]{escape(split)}[/]", *("" for _ in runs))
        for label, key in (
            ("pass@2", "pass@2"),
            ("oracle", "oracle (truth among candidates)"),
            ("size accuracy", "size accuracy"),
            ("cell acc (size-correct)", "cell accuracy (size-correct attempt 1)"),
            ("same shape: cell acc vs copy", "same-shape tests: cell accuracy vs copy-the-input"),
            ("tasks solved", "tasks solved"),
            ("wall time", "wall time"),
        ):
            row(f"  {label}", (escape(p.get(key, "—")) for p in per_run))
    return table
