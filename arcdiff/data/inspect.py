"""Looking at task sources: summaries and terminal drawings in the ARC colour palette."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from arcdiff.data.tasks import MAX_SIDE, NUM_COLOURS, Grid, Problem, Task, TaskSet

# The palette of the ARC viewer, colour 0..9.
PALETTE = (
    "#000000",  # 0 black
    "#0074D9",  # 1 blue
    "#FF4136",  # 2 red
    "#2ECC40",  # 3 green
    "#FFDC00",  # 4 yellow
    "#AAAAAA",  # 5 grey
    "#F012BE",  # 6 magenta
    "#FF851B",  # 7 orange
    "#7FDBFF",  # 8 sky
    "#870C25",  # 9 maroon
)
SIZE_BUCKETS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30))


def summarize(tasks: TaskSet) -> dict[str, Any]:
    """Counts over demonstrations and test inputs (of test outputs, only how many are known)."""
    grids: list[Grid] = [g for task in tasks for g in task.grids()]
    sides = np.array([max(g.shape) for g in grids], dtype=np.int64) if grids else np.zeros(0)
    colours = np.zeros(NUM_COLOURS, dtype=np.int64)
    for g in grids:
        colours += np.bincount(g.ravel(), minlength=NUM_COLOURS)
    return {
        "source": tasks.name,
        "tasks": len(tasks),
        "demonstration_pairs": sum(len(t.demos) for t in tasks),
        "test_inputs": sum(len(t.test_inputs) for t in tasks),
        "test_outputs_known": sum(o is not None for t in tasks for o in tasks.solutions[t.id]),
        "largest_side": int(sides.max()) if len(sides) else 0,
        "grid_side_histogram": {
            f"{lo}-{hi}": int(((sides >= lo) & (sides <= hi)).sum()) for lo, hi in SIZE_BUCKETS
        },
        "tasks_by_largest_side": {
            f"{lo}-{hi}": sum(lo <= t.max_side <= hi for t in tasks) for lo, hi in SIZE_BUCKETS
        },
        "colour_counts": colours.tolist(),
    }


def _bar(count: int, total: int, width: int = 30) -> str:
    return "█" * round(width * count / total) if total else ""


def summary_tables(summary: dict[str, Any]) -> Group:
    overview = Table(title=escape(summary["source"]), show_header=False)
    overview.add_column(style="bold")
    overview.add_column(justify="right")
    for key in (
        "tasks",
        "demonstration_pairs",
        "test_inputs",
        "test_outputs_known",
        "largest_side",
    ):
        overview.add_row(key.replace("_", " "), str(summary[key]))

    sizes = Table(title="grid sizes (largest side)")
    sizes.add_column("side")
    sizes.add_column("grids", justify="right")
    sizes.add_column("tasks", justify="right")
    sizes.add_column("")
    total = sum(summary["grid_side_histogram"].values())
    for bucket, count in summary["grid_side_histogram"].items():
        tasks = summary["tasks_by_largest_side"][bucket]
        sizes.add_row(bucket, str(count), str(tasks), _bar(count, total))

    colours = Table(title="colours (cells)")
    colours.add_column("colour")
    colours.add_column("cells", justify="right")
    colours.add_column("share", justify="right")
    cells = sum(summary["colour_counts"]) or 1
    for c, count in enumerate(summary["colour_counts"]):
        swatch = Text("  ", style=f"on {PALETTE[c]}") + Text(f" {c}")
        colours.add_row(swatch, str(count), f"{100 * count / cells:.1f}%")
    return Group(overview, sizes, colours)


def problems_table(problems: list[Problem]) -> Table:
    table = Table(title=f"{len(problems)} problem(s)")
    for column in ("file", "task", "where", "problem"):
        table.add_column(column, overflow="fold")
    for p in problems:
        table.add_row(*(escape(x) for x in (p.origin, p.task_id or "", p.location, p.message)))
    return table


def render_grid(grid: Grid | None) -> Text:
    """A grid as coloured blocks (two characters a cell); '?' for an unknown grid."""
    if grid is None:
        return Text("?", style="bold")
    text = Text()
    for r, row in enumerate(grid.tolist()):
        if r:
            text.append("\n")
        for cell in row:
            text.append("  ", style=f"on {PALETTE[cell]}")
    return text


def task_table(task: Task, test_outputs: tuple[Grid | None, ...] | None = None) -> Table:
    """Every pair of a task side by side: input -> output, test outputs only when given."""
    table = Table(title=escape(f"task {task.id}  ({task.origin})"), show_lines=True)
    table.add_column("pair")
    table.add_column("input")
    table.add_column("output")
    for i, pair in enumerate(task.demos):
        shapes = f"train {i}\n{_shape(pair.input)} -> {_shape(pair.output)}"
        table.add_row(shapes, render_grid(pair.input), render_grid(pair.output))
    for i, grid in enumerate(task.test_inputs):
        output = test_outputs[i] if test_outputs is not None else None
        out_shape = _shape(output) if output is not None else "?"
        table.add_row(
            f"test {i}\n{_shape(grid)} -> {out_shape}", render_grid(grid), render_grid(output)
        )
    return table


def _shape(grid: Grid) -> str:
    return f"{grid.shape[0]}x{grid.shape[1]}"


assert len(PALETTE) == NUM_COLOURS and SIZE_BUCKETS[-1][1] == MAX_SIDE
