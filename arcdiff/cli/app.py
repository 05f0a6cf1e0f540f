"""The ``arcdiff`` command line: one typer app over the commands of this package.

Every command is a thin function over the library (arcdiff.pipeline, eval, adapt, report);
a user error (arcdiff.errors) ends in one red line on stderr and exit code 1, never a
traceback. Only this package imports typer.
"""

from __future__ import annotations

import typer

from arcdiff.cli.adapt import lora_command, solve_command
from arcdiff.cli.data import data_app
from arcdiff.cli.evaluate import evaluate_command
from arcdiff.cli.image import image_app
from arcdiff.cli.run import config_show, pipeline_command, report_command, train_command

app = typer.Typer(
    name="arcdiff",
    help="Discrete diffusion for ARC-AGI tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
config_app = typer.Typer(help="Show resolved configurations.", no_args_is_help=True)
for name, command in (
    ("train", train_command),
    ("evaluate", evaluate_command),
    ("lora", lora_command),
    ("solve", solve_command),
    ("report", report_command),
    ("pipeline", pipeline_command),
):
    app.command(name)(command)
config_app.command("show")(config_show)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(image_app, name="image")


def main() -> None:
    app()
