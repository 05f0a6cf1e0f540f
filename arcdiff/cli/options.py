"""Options that several commands share, and the evaluation options derived from EvalConfig."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from arcdiff.config import EvalConfig
from arcdiff.config_values import replace_checked

KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY

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

CkptOpt = Annotated[
    str, typer.Option(help="Which checkpoint: final, best, last, or a snapshot name (min_15).")
]
StatsOpt = Annotated[bool, typer.Option(help="Also print a per-task table.")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cuda, cuda:1, mps or cpu (default: the best available).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace earlier results made with other settings.")
]


def id_list(ids: str | None) -> list[str] | None:
    """--ids a,b -> ["a", "b"]."""
    return [i for i in ids.split(",") if i] if ids else None


def _option_type(tp: Any) -> Any:
    """The Python type typer parses an option of config type ``tp`` into: a Literal is read as
    a string and checked by the config (its error lists the choices), ``X | None`` as X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Literal:
        return str
    if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _option_type(args[0])
    return tp


def _choices(tp: Any) -> str:
    return f" One of: {', '.join(typing.get_args(tp))}." if typing.get_origin(tp) is Literal else ""


@dataclasses.dataclass(frozen=True)
class FieldOption:
    """One command-line option of a config field: its name, config type, ``--flag`` (or
    ``--x/--no-x``) and help."""

    name: str
    type: Any
    flag: str
    help: str
    default: str = ""  # what it is when not given, said after the choices


def with_field_options(
    command: Callable[..., Any], options: Sequence[FieldOption], into: str
) -> Callable[..., Any]:
    """``command`` with one typer option per entry of ``options`` (none given: None); the
    command receives those given as one ``{field: value}`` dict in its parameter ``into``."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for name, p in signature.parameters.items() if name != into]
    for o in options:
        text = f"{o.help}{_choices(o.type)}{o.default}"
        option = typer.Option(o.flag, help=text, show_default=False)
        annotation = Annotated[_option_type(o.type) | None, option]
        params.append(inspect.Parameter(o.name, KEYWORD_ONLY, default=None, annotation=annotation))

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {o.name: kwargs.pop(o.name, None) for o in options}
        values = {name: value for name, value in given.items() if value is not None}
        return command(*args, **{into: values}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def eval_options(cls: type[EvalConfig] = EvalConfig) -> list[FieldOption]:
    """The evaluation settings with a command-line option (``arcdiff.config.setting``)."""
    hints = typing.get_type_hints(cls)
    return [
        FieldOption(
            f.name,
            hints[f.name],
            f.metadata["option"],
            f.metadata["help"],
            f" Default: eval.{f.name}.",
        )
        for f in dataclasses.fields(cls)
        if f.metadata.get("option")
    ]


def eval_options_for(cls: type[EvalConfig]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving a command one option per field of ``cls`` that declares one; the
    command receives those given as ``eval_options`` for :func:`eval_settings`. A field added
    to EvalConfig with an ``option`` reaches every command that takes evaluation settings."""
    return functools.partial(with_field_options, options=eval_options(cls), into="eval_options")


with_eval_options = eval_options_for(EvalConfig)


def eval_settings(base: EvalConfig, given: dict[str, Any]) -> EvalConfig:
    """``base`` (a config's eval section) with the options given, checked as a config's values
    are: a bad value is one ConfigError naming the options and the field."""
    if not given:
        return base
    flags = {o.name: o.flag.split("/")[0] for o in eval_options(type(base))}
    where = " ".join(f"{flags.get(name, name)} {value}" for name, value in given.items())
    return replace_checked(base, "eval", given, where)
