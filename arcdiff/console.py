"""The terminal side of arcdiff: the consoles, the one progress-bar builder, and user errors
as one line (no typer here: the command lines in cli.py and image/cli.py use these)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from arcdiff.errors import ArcdiffError

console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class _Unit(ProgressColumn):
    """What a bar counts: the job's ``unit`` field, else the bar's."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(task.fields.get("unit", self.unit))


def progress_bar(
    label: str,
    console: Console | None,
    enabled: bool,
    info: bool = True,
    unit: str = "steps",
    count: bool = True,
) -> Progress:
    """A rich bar counting ``unit`` (``12/100 steps``); with ``info``, each job shows its
    ``info`` field (loss, task). Without ``count``, the bar alone, no count or time remaining
    (the info says how far: a clock-budgeted training's minutes)."""
    columns = [TextColumn(f"[bold]{escape(label)}"), BarColumn()]
    if count:
        columns += [MofNCompleteColumn(), _Unit(unit)]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    if count:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)


def error_line(message: str) -> None:
    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def user_errors(fn: F) -> F:
    """Print a user error as one line and exit non-zero instead of raising.

    arcdiff errors exit 1 (or their ``exit_code``: 130 / 143 for an interrupted training);
    an OSError from the file system exits 1 naming the file; Ctrl-C outside training 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ArcdiffError as e:
            error_line(str(e))
            raise SystemExit(getattr(e, "exit_code", 1)) from None
        except OSError as e:  # the file system said no (disk full, read-only, not a folder)
            where = f": {e.filename}" if e.filename else ""
            error_line(f"{e.strerror or e}{where}")
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
