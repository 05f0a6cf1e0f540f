"""Rich tables for the terminal: an evaluation's scores, its tasks, and runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from arcdiff.report.compare import compare_runs
from arcdiff.report.format import mark, pct
from arcdiff.report.rows import sorted_tasks, summary_rows


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
    c = compare_runs(run_dirs)
    table = Table(title="runs", show_lines=False)
    table.add_column("", style="bold")
    for run in c.runs:
        table.add_column(escape(run), justify="right")
    for i, (title, rows) in enumerate(c.sections):
        if i:
            table.add_section()
            table.add_row(f"[cyan]{escape(title)}[/]", *("" for _ in c.runs))
        indent = "  " if i else ""
        for label, values in rows:
            table.add_row(f"{indent}{label}", *(escape(v) for v in values))
    return table
