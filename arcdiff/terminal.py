"""What every command line of arcdiff shares: the consoles and the one-line user errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from arcdiff.errors import ArcdiffError
from arcdiff.runs.paths import write_json

__all__ = ["console", "err_console", "error_line", "user_errors", "write_json"]

console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


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
            raise typer.Exit(getattr(e, "exit_code", 1)) from None
        except OSError as e:  # the file system said no (disk full, read-only, not a folder)
            where = f": {e.filename}" if e.filename else ""
            error_line(f"{e.strerror or e}{where}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
