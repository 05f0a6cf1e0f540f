"""``arcdiff data``: what a task source holds, its problems, and a task drawn in colour."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from arcdiff.cli.options import (
    SOURCE_HELP,
    ConfigOpt,
    IdsOpt,
    LimitOpt,
    MaxSizeOpt,
    SetOpt,
    id_list,
)
from arcdiff.config import load_config
from arcdiff.console import console, error_line, user_errors
from arcdiff.errors import DataError
from arcdiff.runs.paths import write_json

data_app = typer.Typer(help="Inspect and validate task sources.", no_args_is_help=True)


@data_app.command("info")
@user_errors
def data_info(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    max_size: MaxSizeOpt = None,
    ids: IdsOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary to this JSON file.")
    ] = None,
) -> None:
    """What a source holds: tasks, pairs, sizes and colours.

    Tasks, pairs, test inputs, grid sizes and colours of a source.

    Filters default to the config's data section when --config or --set is given.
    """
    from arcdiff.data.inspect import summary_tables
    from arcdiff.data.summary import summarize
    from arcdiff.data.tasks import MAX_SIDE, load_tasks

    data = load_config(config, set_ or []).data if (config or set_) else None
    tasks = load_tasks(
        source,
        max_size=max_size or (data.max_size if data else MAX_SIDE),
        ids=id_list(ids) or (data.ids if data else None),
        limit=limit or (data.limit if data else None),
    )
    summary = summarize(tasks)
    console.print(summary_tables(summary))
    if json_out is not None:
        write_json(json_out, summary)


@data_app.command("kaggle")
@user_errors
def data_kaggle(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    out: Annotated[Path, typer.Option(help="Folder of the two files.")] = Path("outputs/kaggle"),
    name: Annotated[
        str | None, typer.Option(help="File name prefix (default: the source).")
    ] = None,
    max_size: MaxSizeOpt = None,
    ids: IdsOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Write a source as a Kaggle challenges and solutions pair.

    NAME_challenges.json and NAME_solutions.json (the test outputs, when the source has them):
    the format `arcdiff solve` and ARC Prize read."""
    from arcdiff.data.kaggle import kaggle_files
    from arcdiff.data.tasks import MAX_SIDE, load_tasks

    tasks = load_tasks(source, max_size=max_size or MAX_SIDE, ids=id_list(ids), limit=limit)
    prefix = name or source.replace(":", "_").replace("@", "_").replace("/", "_").strip("_")
    files = kaggle_files(tasks)
    challenges, solutions = out / f"{prefix}_challenges.json", out / f"{prefix}_solutions.json"
    write_json(challenges, files[0])
    if files[1] is not None:
        write_json(solutions, files[1])
    else:
        solutions = None
    console.print(
        f"wrote {len(tasks)} task(s): {challenges}"
        + (f", {solutions}" if solutions else " (no solutions: test outputs hidden)"),
        markup=False,
    )


@data_app.command("validate")
@user_errors
def data_validate(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    max_size: MaxSizeOpt = None,
    ids: IdsOpt = None,
    limit: LimitOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the problems to this JSON file.")
    ] = None,
) -> None:
    """Check every grid of every task; exit 1 on any problem.

    Reports all problems, of the whole source or of the tasks the filters keep."""
    from arcdiff.data.inspect import problems_table
    from arcdiff.data.tasks import MAX_SIDE, check_source

    count, problems = check_source(
        source, max_size=max_size or MAX_SIDE, ids=id_list(ids), limit=limit
    )
    if json_out is not None:
        write_json(
            json_out,
            {
                "source": source,
                "tasks": count,
                "problems": [
                    {"file": p.origin, "task": p.task_id, "where": p.location, "problem": p.message}
                    for p in problems
                ],
            },
        )
    if problems:
        console.print(problems_table(problems))
        message = f"{source}: {len(problems)} problem(s) in {count} task(s)"
        error_line(message)
        raise typer.Exit(1)
    console.print(
        Text("ok: ", style="green") + Text(f"{source}: {count} task(s), every grid valid")
    )


def split_task_ref(ref: str) -> tuple[str, str]:
    """``aa1:eval/007bbfb7`` -> ("aa1:eval", "007bbfb7"); a task file is its own source."""
    path = Path(ref)
    if path.is_file():
        return ref, path.stem
    source, sep, task_id = ref.rpartition("/")
    if not sep or not source or not task_id:
        raise DataError(f"'{ref}': expected SOURCE/TASK_ID, e.g. aa1:eval/00576224")
    return source, task_id


@data_app.command("show")
@user_errors
def data_show(
    ref: Annotated[
        str, typer.Argument(help="SOURCE/TASK_ID, e.g. aa1:train/007bbfb7, or a task file.")
    ],
    answers: Annotated[
        bool, typer.Option(help="Also draw the test outputs, where the source has them.")
    ] = False,
) -> None:
    """Draw a task's pairs in the ARC colour palette.

    Digits instead of colours when piped or on a 16-colour terminal."""
    from arcdiff.data.inspect import task_table, task_text
    from arcdiff.data.tasks import load_tasks

    source, task_id = split_task_ref(ref)
    tasks = load_tasks(source, ids=[task_id])
    task = tasks[task_id]
    outputs = tasks.solutions[task_id] if answers else None
    if console.is_terminal:
        console.print(task_table(task, outputs))
    else:
        console.out(task_text(task, outputs), end="")
