"""Options that several command lines share (typer: used by the CLI modules only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Config file, or a preset name from configs/ (e.g. smol_aa1)."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: section.key=value (repeatable)."),
]
SOURCE_HELP = (
    "aa1:train, aa1:eval, aa2:train, aa2:eval, a folder of task JSON, or a JSON file (a Kaggle "
    "challenges file reads its solutions file beside it); SOURCE@unseen / SOURCE@seen: the two "
    "halves of its tasks within 10x10 (every second by id unseen)."
)

# The vocabulary every command shares (README, "One vocabulary"): --run names an existing run
# a command reads, --out where it writes; the task filters and --progress read the same way
# everywhere.
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--out", "--run", help="Run directory (default: outputs/<config name>)."),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Also print the whole resolved config as a tree.")
]
MaxSizeOpt = Annotated[
    int | None,
    typer.Option(help="Keep tasks whose demonstrations and test inputs fit NxN."),
]
IdsOpt = Annotated[str | None, typer.Option(help="Comma-separated task ids to keep.")]
LimitOpt = Annotated[int | None, typer.Option(help="Keep the first N tasks.")]


def id_list(ids: str | None) -> list[str] | None:
    """--ids a,b -> ["a", "b"]."""
    return [i for i in ids.split(",") if i] if ids else None
