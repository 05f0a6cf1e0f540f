"""``arcdiff lora | solve``: a trained run adapted to tasks it has not seen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from arcdiff.cli.options import (
    SOURCE_HELP,
    CkptOpt,
    ConfigOpt,
    DeviceOpt,
    IdsOpt,
    LimitOpt,
    ProgressOpt,
    SetOpt,
    StatsOpt,
    VerboseOpt,
    id_list,
)
from arcdiff.cli.output import config_tree, show_scores
from arcdiff.console import console, user_errors

ModeOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="shared, per-task, embeddings-only or full (repeatable: each is trained and "
        "compared; default: lora.mode)."
    ),
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        help="Adapter name, saved in BASE/lora/NAME (default: the mode; NAME-MODE for several "
        "modes)."
    ),
]


@user_errors
def lora_command(
    base: Annotated[
        Path,
        typer.Option("--run", "--base", help="The trained run to adapt (its EMA weights)."),
    ],
    tasks: Annotated[
        str | None,
        typer.Option(help=f"Tasks to adapt to: {SOURCE_HELP} Default: the config's eval.split."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    mode: ModeOpt = None,
    name: NameOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder of the adapters (default: BASE/lora).")
    ] = None,
    ids: IdsOpt = None,
    limit: LimitOpt = None,
    checkpoint: CkptOpt = "final",
    merge: Annotated[
        bool, typer.Option(help="Also write NAME/merged/, a run dir with the adapter merged in.")
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option(help="Score the baseline and each adaptation and print the comparison."),
    ] = True,
    baseline: Annotated[
        bool,
        typer.Option(help="With --evaluate, also score the untrained model (new rows only)."),
    ] = True,
    device: DeviceOpt = None,
    progress: ProgressOpt = True,
    force: Annotated[
        bool, typer.Option("--force", help="Replace adapters of the same name.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Adapt a trained run to unseen tasks.

    New task embeddings plus peft LoRA (or the embeddings only, or every weight), trained on
    the tasks' demonstration pairs; then the adaptations are scored and compared."""
    from arcdiff.adapt import lora_config, run_lora
    from arcdiff.runs.checkpoint import load_run
    from arcdiff.runs.faults import out_of_memory_names
    from arcdiff.runs.lock import run_lock
    from arcdiff.runs.paths import select_device

    base_run = load_run(base, checkpoint)
    cfg = lora_config(base_run, config, set_ or [])
    if verbose:
        console.print(config_tree(cfg))
    modes = mode or [cfg.lora.mode]
    with (
        run_lock(base, "lora"),
        out_of_memory_names("lora.batch_size", cfg.lora.batch_size),
    ):
        run_lora(
            base_run,
            cfg,
            tasks or cfg.eval.split,
            modes=modes,
            names=adapter_names(modes, name),
            out=out,
            ids=id_list(ids),
            limit=limit,
            merge=merge,
            evaluate=evaluate,
            baseline=baseline,
            device=select_device(device),
            console=console,
            progress=progress,
            force=force,
        )


def adapter_names(modes: list[str], name: str | None) -> list[str]:
    """Each mode's adapter name: the mode; NAME for one mode; NAME-MODE for several."""
    if name is None:
        return list(modes)
    return [name] if len(modes) == 1 else [f"{name}-{m}" for m in modes]


SOLVE_DEFAULTS = ["lora.mode=full", "lora.steps=100000"]  # a clock budget, every weight


@user_errors
def solve_command(
    tasks: Annotated[str, typer.Argument(help=f"The tasks to answer: {SOURCE_HELP}")],
    base: Annotated[
        Path, typer.Option("--base", "--run", help="The trained run to start from (EMA weights).")
    ],
    minutes: Annotated[
        float, typer.Option(help="The whole budget: test-time training and sampling.")
    ] = 15.0,
    out: Annotated[
        Path | None,
        typer.Option(help="Where submission.json and the rest go (default: outputs/solve-TASKS)."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="What trains: full, shared (one LoRA), embeddings-only (lora.mode)."),
    ] = None,
    per_task: Annotated[
        bool, typer.Option("--per-task/--joint", help="One model per task, or one for all.")
    ] = False,
    ids: IdsOpt = None,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: CkptOpt = "final",
    device: DeviceOpt = None,
    progress: ProgressOpt = True,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier solve in --out.")
    ] = False,
    stats: StatsOpt = False,
) -> None:
    """Answer new tasks with test-time training, in a time budget.

    The base run is fine-tuned on the tasks' demonstrations, then samples their test inputs,
    within --minutes; writes submission.json (every task, two attempts per test input) and,
    when the tasks come with solutions, scores.json."""
    from arcdiff.adapt import lora_config
    from arcdiff.adapt.solve import STOPPED_FALLBACK, describe, solve_tasks
    from arcdiff.data.tasks import load_tasks
    from arcdiff.runs.checkpoint import load_run
    from arcdiff.runs.evals import split_dirname
    from arcdiff.runs.faults import out_of_memory_names
    from arcdiff.runs.paths import select_device
    from arcdiff.train.interrupt import TrainingInterrupted

    base_run = load_run(base, checkpoint)
    overrides = [*SOLVE_DEFAULTS, *(set_ or []), *([f"lora.mode={mode}"] if mode else [])]
    cfg = lora_config(base_run, config, overrides)
    task_set = load_tasks(tasks, ids=id_list(ids), limit=limit)  # every size: all are answered
    out = out or Path("outputs") / f"solve-{split_dirname(tasks)}"
    with out_of_memory_names("lora.batch_size", cfg.lora.batch_size):
        manifest = solve_tasks(
            base_run,
            cfg,
            task_set,
            minutes=minutes,
            out=out,
            per_task=per_task or cfg.lora.mode == "per-task",
            device=select_device(device),
            console=console,
            progress=progress,
            force=force,
        )
    if "scores" in manifest:
        show_scores(orjson.loads((out / "scores.json").read_bytes()), stats)
    console.print(describe(manifest), markup=False)
    console.print(f"wrote {escape(str(out / 'submission.json'))}")
    if STOPPED_FALLBACK in manifest["fallback"]:
        raise TrainingInterrupted(f"interrupted: {out / 'submission.json'} names every task", 130)
