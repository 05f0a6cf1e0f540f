"""Options that several command lines share (typer: used by the CLI modules only)."""

from __future__ import annotations

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
SOURCE_HELP = "aa1:train, aa1:eval, aa2:train, aa2:eval, a folder of task JSON, or a JSON file."
