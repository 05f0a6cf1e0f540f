"""Looking at task sources in a terminal: summary tables and drawings in the ARC colour palette."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from arcdiff.data.tasks import NUM_COLOURS, Grid, Problem, Task

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


def _ink(colour: str) -> str:
    """The digit colour readable on a palette colour: black on the light ones (BT.601 luma)."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 128 else "white"


DIGIT_INK = tuple(_ink(colour) for colour in PALETTE)


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


def render_grid(grid: Grid | None, *, digits: bool = False) -> Text:
    """A grid as coloured blocks (two characters a cell); '?' for an unknown grid.

    ``digits`` writes each cell's colour number on its block, for consoles that cannot show
    ten distinct colours (without colour, only the digits are left).
    """
    if grid is None:
        return Text("?", style="bold")
    text = Text()
    for r, row in enumerate(grid.tolist()):
        if r:
            text.append("\n")
        for cell in row:
            if digits:
                text.append(f"{cell} ", style=f"{DIGIT_INK[cell]} on {PALETTE[cell]}")
            else:
                text.append("  ", style=f"on {PALETTE[cell]}")
    return text


def shows_ten_colours(console: Console) -> bool:
    """Whether the console can draw the palette as ten distinct colours.

    16-colour terminals map red 2 and orange 7 to one colour (legacy Windows: yellow 4 and
    orange 7), and a console writing to a file or pipe has no colour at all.
    """
    return console.color_system in ("256", "truecolor") and not console.no_color


class GridDrawing:
    """A grid that draws as blocks where the console shows ten colours, else as digits."""

    def __init__(self, grid: Grid | None) -> None:
        self.grid = grid

    def _text(self, console: Console) -> Text:
        return render_grid(self.grid, digits=not shows_ten_colours(console))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._text(console)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._text(console))


def task_table(task: Task, test_outputs: tuple[Grid | None, ...] | None = None) -> Table:
    """Every pair of a task side by side: input -> output, test outputs only when given."""
    table = Table(title=escape(f"task {task.id}  ({task.origin})"), show_lines=True)
    table.add_column("pair")
    table.add_column("input")
    table.add_column("output")
    for i, pair in enumerate(task.demos):
        shapes = f"train {i}\n{_shape(pair.input)} -> {_shape(pair.output)}"
        table.add_row(shapes, GridDrawing(pair.input), GridDrawing(pair.output))
    for i, grid in enumerate(task.test_inputs):
        output = test_outputs[i] if test_outputs is not None else None
        out_shape = _shape(output) if output is not None else "?"
        table.add_row(
            f"test {i}\n{_shape(grid)} -> {out_shape}", GridDrawing(grid), GridDrawing(output)
        )
    return table


def task_text(task: Task, test_outputs: tuple[Grid | None, ...] | None = None) -> str:
    """A task as plain text, one grid row a line of digits: for files and pipes.

    Grids follow one another instead of side by side, so a 30x30 grid never wraps.
    """
    blocks = [f"task {task.id}  ({task.origin})"]
    for i, pair in enumerate(task.demos):
        blocks.append(
            f"train {i}  {_shape(pair.input)} -> {_shape(pair.output)}\n"
            f"input\n{_digits(pair.input)}\noutput\n{_digits(pair.output)}"
        )
    for i, grid in enumerate(task.test_inputs):
        output = test_outputs[i] if test_outputs is not None else None
        out_shape = _shape(output) if output is not None else "?"
        blocks.append(
            f"test {i}  {_shape(grid)} -> {out_shape}\n"
            f"input\n{_digits(grid)}\noutput\n{_digits(output)}"
        )
    return "\n\n".join(blocks) + "\n"


def _digits(grid: Grid | None) -> str:
    if grid is None:
        return "?"
    return "\n".join(" ".join(str(cell) for cell in row) for row in grid.tolist())


def _shape(grid: Grid) -> str:
    return f"{grid.shape[0]}x{grid.shape[1]}"


assert len(PALETTE) == len(DIGIT_INK) == NUM_COLOURS
