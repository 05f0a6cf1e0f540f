"""The terminal side of library code: the one rich progress-bar builder (no typer here)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(label: str, console: Console | None, enabled: bool, info: bool = True) -> Progress:
    """A rich bar; with ``info``, each job shows its ``info`` field (loss, task)."""
    columns = [TextColumn(f"[bold]{escape(label)}"), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, TimeRemainingColumn(), console=console, disable=not enabled)
