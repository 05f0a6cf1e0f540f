"""``arcdiff train | pipeline | report | config show``: a run directory from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from arcdiff.cli.options import (
    ConfigOpt,
    DeviceOpt,
    ProgressOpt,
    RunDirOpt,
    SetOpt,
    StatsOpt,
    VerboseOpt,
)
from arcdiff.cli.output import config_tree, show_scores
from arcdiff.config import Config, load_config, save_config
from arcdiff.console import console, user_errors
from arcdiff.errors import ConfigError


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
    show_scores(result.scores, stats)
    console.print(f"report: {escape(str(result.report))}")


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
