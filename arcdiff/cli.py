"""The ``arcdiff`` command line: thin typer commands over library functions.

A user error (arcdiff.errors) ends in one red line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.tree import Tree

from arcdiff.config import Config, config_to_dict, load_config, save_config
from arcdiff.console import console, user_errors
from arcdiff.data.cli import data_app
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.image.cli import image_app
from arcdiff.options import (
    SOURCE_HELP,
    ConfigOpt,
    IdsOpt,
    LimitOpt,
    ProgressOpt,
    RunDirOpt,
    SetOpt,
    VerboseOpt,
    id_list,
)

app = typer.Typer(
    name="arcdiff",
    help="Discrete diffusion for ARC-AGI tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
config_app = typer.Typer(help="Show resolved configurations.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(image_app, name="image")


def config_tree(cfg: Config) -> Tree:
    tree = Tree(f"[bold]config[/] {escape(cfg.name)}")
    for section, values in config_to_dict(cfg).items():
        if isinstance(values, dict):
            branch = tree.add(f"[bold cyan]{section}[/]")
            for key, value in values.items():
                branch.add(f"{key} = [green]{escape(orjson.dumps(value).decode())}[/]")
    return tree


@app.command("train")
@user_errors
def train_command(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: RunDirOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out from its last checkpoint, with its config.json "
            "(--set may change its budget, checkpointing, logging and threads)."
        ),
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cuda, cuda:1, mps or cpu (default: the best available).")
    ] = None,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Train a denoiser into a run directory.

    Writes config.json, metrics.jsonl and checkpoints/ there. Ctrl-C or SIGTERM saves
    checkpoints/last.pt and exits 130 / 143; --resume continues."""
    from arcdiff.pipeline import train_run
    from arcdiff.runs.paths import select_device

    cfg, run_dir = run_config(config, set_, out, existing=resume)
    if verbose:
        console.print(config_tree(cfg))
    result = train_run(
        cfg,
        run_dir,
        resume=resume,
        device=select_device(device) if device else None,
        progress=progress,
        console=console,
    )
    val = result.val
    parts = [
        f"{result.step} steps ({result.stop_reason})",
        f"{result.skipped_steps} skipped",
        f"val loss {val['val_loss']:.4f}, val acc {val['val_acc']:.3f}" if val else "",
        f"run dir {escape(str(run_dir))}",
    ]
    console.print("[green]done[/]: " + "; ".join(p for p in parts if p))


def run_config(
    config: str | None, set_: list[str] | None, out: Path | None, *, existing: bool
) -> tuple[Config, Path]:
    """The config and run directory of train / pipeline: ``--out`` (default
    outputs/<config name>); an ``existing`` run continues with its own config.json (--set may
    change its budget; a --config is not applied, with a note where it differs)."""
    from arcdiff.train.resume import resume_config

    run_dir = out or Path("outputs") / load_config(config, set_ or []).name
    if not existing:
        return load_config(config, set_ or []), run_dir
    cfg, note = resume_config(run_dir, config, set_ or [])
    if note:
        console.print(note, markup=False, soft_wrap=True)
    return cfg, run_dir


def _show_scores(scores: dict[str, Any], stats: bool) -> None:
    from arcdiff.report import per_task_table, summary_table

    console.print(summary_table(scores))
    if stats:
        console.print(per_task_table(scores))


RunOpt = Annotated[
    Path | None,
    typer.Option("--run", help="Run directory (default: the most recent run under outputs/)."),
]
SplitOpt = Annotated[
    str | None, typer.Option(help="Tasks to evaluate (default: the config's eval.split).")
]
StepsOpt = Annotated[int | None, typer.Option(help="Sampling steps (default: eval.num_steps).")]
MajOpt = Annotated[
    bool | None, typer.Option("--maj/--no-maj", help="Vote over augmentations (default: eval.maj).")
]
AugsOpt = Annotated[int | None, typer.Option(help="Augmentations per test input with --maj.")]
SamplerOpt = Annotated[
    str | None,
    typer.Option(
        help="argmax (deterministic steps), ancestral (posterior draws) or confidence "
        "(most confident cells first). Default: eval.sampler."
    ),
]
SamplesOpt = Annotated[int | None, typer.Option(help="Draws per augmented view (eval.samples).")]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(help="Confidence sampler: 0 takes argmax colours, > 0 draws them."),
]
RemaskOpt = Annotated[
    bool | None,
    typer.Option("--remask/--no-remask", help="Confidence sampler: decided cells may be redrawn."),
]
RankingOpt = Annotated[
    str | None,
    typer.Option(
        help="vote (count, then confidence) or poe (product of experts over the views). "
        "Default: eval.ranking."
    ),
]
TopOpt = Annotated[
    int | None, typer.Option(help="poe ranking: how many of the most visited it scores.")
]
VisitOpt = Annotated[
    float | None, typer.Option(help="poe ranking: bonus per log(1 + visits) (eval.visit_weight).")
]
CkptOpt = Annotated[
    str, typer.Option(help="Which checkpoint: final, best, last, or a snapshot name (min_15).")
]
EmaOpt = Annotated[
    bool | None, typer.Option("--ema/--no-ema", help="Sample with the EMA weights (default).")
]
StatsOpt = Annotated[bool, typer.Option(help="Also print a per-task table.")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="cuda, cuda:1, mps or cpu (default: the best available).")
]
AdapterOpt = Annotated[
    str | None,
    typer.Option(
        help="Evaluate with this LoRA adapter of the run (RUN/lora/NAME, from arcdiff lora); "
        "its tasks and split by default, scores in RUN/lora/NAME/eval/."
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace earlier results made with other settings.")
]


@app.command("evaluate")
@user_errors
def evaluate_command(
    run: RunOpt = None,
    split: SplitOpt = None,
    num_steps: StepsOpt = None,
    maj: MajOpt = None,
    num_augs: AugsOpt = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N tasks only.")] = None,
    sampler: SamplerOpt = None,
    samples: SamplesOpt = None,
    temperature: TemperatureOpt = None,
    remask: RemaskOpt = None,
    ranking: RankingOpt = None,
    visit_weight: VisitOpt = None,
    rank_top: TopOpt = None,
    checkpoint: CkptOpt = "final",
    ema: EmaOpt = None,
    stats: StatsOpt = False,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    adapter: AdapterOpt = None,
    force: ForceOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Sample, vote and score a run.

    Writes eval/<split>/{predictions,submission,scores}.json in the run directory
    (eval/<split>@<checkpoint>/ for a checkpoint other than final, and eval/<split>~<tag>/
    for settings other than the run's config, e.g. ~steps1-limit1)."""
    from arcdiff.eval.evaluate import EvalSettings, evaluate_run
    from arcdiff.runs.paths import latest_run, select_device
    from arcdiff.train.distributed import env_rank

    if env_rank() != 0:  # under torchrun rank 0 evaluates alone: one writer of eval/
        return
    if run is None:
        run = latest_run()
        console.print(f"evaluating the most recent run: {escape(str(run))}")
    elif not run.is_dir():
        raise CheckpointError(f"{run}: no such run directory")
    config_dir = run
    if adapter is not None:
        from arcdiff.adapt import find_adapter

        config_dir = find_adapter(run, adapter)
    cfg = load_config(config_dir / "config.json", set_ or [])
    settings = EvalSettings.from_config(
        cfg,
        split=split,
        num_steps=num_steps,
        maj=maj,
        num_augs=num_augs,
        limit=limit,
        sampler=sampler,
        samples=samples,
        temperature=temperature,
        remask=remask,
        ranking=ranking,
        visit_weight=visit_weight,
        rank_top=rank_top,
        checkpoint=checkpoint,
        use_ema=ema,
    )
    torch_device = select_device(device)
    model = None
    if adapter is not None:  # the base run with the adapter; scores in RUN/lora/NAME/eval/
        from arcdiff.adapt import adapter_eval_model

        model = adapter_eval_model(run, adapter, device=torch_device)
    scores = evaluate_run(
        run,
        settings,
        model=model,
        device=torch_device,
        console=console,
        progress=progress,
        expect=cfg,
        force=force,
    )
    _show_scores(scores, stats)


@app.command("lora")
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
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="shared, per-task, embeddings-only or full (repeatable: each is trained and "
            "compared; default: lora.mode)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Adapter name, saved in BASE/lora/NAME (default: the mode; NAME-MODE "
            "for several modes)."
        ),
    ] = None,
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
    from arcdiff.adapt import load_base, lora_config, run_lora
    from arcdiff.runs.faults import out_of_memory_names
    from arcdiff.runs.lock import run_lock
    from arcdiff.runs.paths import select_device

    base_run = load_base(base, checkpoint)
    cfg = lora_config(base_run, config, set_ or [])
    if verbose:
        console.print(config_tree(cfg))
    modes = mode or [cfg.lora.mode]
    if name is None:
        names = list(modes)
    else:
        names = [name] if len(modes) == 1 else [f"{name}-{m}" for m in modes]
    with (
        run_lock(base, "lora"),
        out_of_memory_names("lora.batch_size", cfg.lora.batch_size),
    ):
        run_lora(
            base_run,
            cfg,
            tasks or cfg.eval.split,
            modes=modes,
            names=names,
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


SOLVE_DEFAULTS = ["lora.mode=full", "lora.steps=100000"]  # a clock budget, every weight


@app.command("solve")
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
    from arcdiff.adapt import load_base, lora_config
    from arcdiff.adapt.solve import STOPPED_FALLBACK, describe, solve_tasks
    from arcdiff.data.tasks import load_tasks
    from arcdiff.eval.evaluate import split_dirname
    from arcdiff.runs.faults import out_of_memory_names
    from arcdiff.runs.paths import select_device
    from arcdiff.train.interrupt import TrainingInterrupted

    base_run = load_base(base, checkpoint)
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
        _show_scores(orjson.loads((out / "scores.json").read_bytes()), stats)
    console.print(describe(manifest), markup=False)
    console.print(f"wrote {escape(str(out / 'submission.json'))}")
    if STOPPED_FALLBACK in manifest["fallback"]:
        raise TrainingInterrupted(f"interrupted: {out / 'submission.json'} names every task", 130)


@app.command("report")
@user_errors
def report_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to report and compare.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="One run: its report folder (default: RUN/report). Several runs: where "
            "their comparison.{md,html,json} go (default: outputs/comparison)."
        ),
    ] = None,
) -> None:
    """Write each run's report and compare the runs.

    Each run gets report/report.{md,html} with its plots (one HTML file holds everything);
    several runs are also compared side by side and the comparison is saved."""
    from arcdiff.report import compare_table, write_comparison, write_report

    for run in runs:
        path = write_report(run, out if len(runs) == 1 else None)
        console.print(f"wrote {escape(str(path))}")
    if len(runs) > 1:
        console.print(compare_table(runs))
        where = write_comparison(runs, out or Path("outputs") / "comparison")
        console.print(f"wrote {escape(str(where))}")


@app.command("pipeline")
@user_errors
def pipeline_command(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: RunDirOpt = None,
    skip_training: Annotated[
        bool, typer.Option(help="Reuse the trained run in --out: evaluate and report only.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(hidden=True, help="Accepted for old scripts: an existing run continues."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Evaluate a trained run again over its own scores.")
    ] = False,
    stats: StatsOpt = False,
    device: DeviceOpt = None,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Train, evaluate and report one run directory.

    What is left is done: a new run is trained, an interrupted one continues (with its
    config.json), a finished one is evaluated (if its eval/<split>/ is not there yet, or with
    --force) and reported."""
    from arcdiff.pipeline import run_pipeline
    from arcdiff.runs.paths import CONFIG, select_device

    run_dir = out or Path("outputs") / load_config(config, set_ or []).name
    cfg, run_dir = run_config(config, set_, run_dir, existing=(run_dir / CONFIG).is_file())
    if verbose:
        console.print(config_tree(cfg))
    result = run_pipeline(
        cfg,
        run_dir,
        skip_training=skip_training,
        force=force,
        device=select_device(device) if device else None,
        console=console,
        progress=progress,
    )
    if result is None:  # a torchrun rank other than 0: rank 0 evaluates and reports
        return
    _show_scores(result.scores, stats)
    console.print(f"report: {escape(str(result.report))}")


@config_app.command("show")
@user_errors
def config_show(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run: Annotated[
        Path | None, typer.Option("--run", help="Show this run's config.json instead.")
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="Also write the resolved config to this JSON file.")
    ] = None,
) -> None:
    """Print the resolved config as a tree.

    The config file or preset, then the --set overrides; with --run, a run's config.json."""
    if run is not None and config is not None:
        raise ConfigError("--run and --config: give one (a run's config is its config.json)")
    cfg = load_config(run / "config.json" if run else config, set_ or [])
    console.print(config_tree(cfg))
    if save is not None:
        save_config(cfg, save)
        console.print(f"saved {save}")


def main() -> None:
    app()
