"""``arcdiff evaluate``: sample, vote and score a run (or an adapter of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from arcdiff.cli.options import (
    CkptOpt,
    DeviceOpt,
    ForceOpt,
    ProgressOpt,
    SetOpt,
    StatsOpt,
    eval_settings,
    with_eval_options,
)
from arcdiff.cli.output import show_scores
from arcdiff.config import load_config
from arcdiff.console import console, user_errors
from arcdiff.errors import CheckpointError

RunOpt = Annotated[
    Path | None,
    typer.Option("--run", help="Run directory (default: the most recent run under outputs/)."),
]
AdapterOpt = Annotated[
    str | None,
    typer.Option(
        help="Evaluate with this LoRA adapter of the run (RUN/lora/NAME, from arcdiff lora); "
        "its tasks and split by default, scores in RUN/lora/NAME/eval/."
    ),
]


@user_errors
@with_eval_options
def evaluate_command(
    run: RunOpt = None,
    checkpoint: CkptOpt = "final",
    stats: StatsOpt = False,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    adapter: AdapterOpt = None,
    force: ForceOpt = False,
    progress: ProgressOpt = True,
    eval_options: dict[str, Any] | None = None,
) -> None:
    """Sample, vote and score a run.

    Writes eval/<split>/{predictions,submission,scores}.json in the run directory
    (eval/<split>@<checkpoint>/ for a checkpoint other than final, and eval/<split>~<tag>/
    for settings other than the run's config, e.g. ~steps1-limit1). Any other evaluation
    setting: --set eval.KEY=VALUE."""
    from arcdiff.eval.evaluate import evaluate_run
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
    settings = eval_settings(cfg.eval, eval_options or {})
    torch_device = select_device(device)
    model = None
    if adapter is not None:  # the base run with the adapter; scores in RUN/lora/NAME/eval/
        from arcdiff.adapt import adapter_eval_model

        model = adapter_eval_model(run, adapter, device=torch_device)
    scores = evaluate_run(
        run,
        settings,
        checkpoint=checkpoint,
        model=model,
        device=torch_device,
        console=console,
        progress=progress,
        expect=cfg,
        force=force,
    )
    show_scores(scores, stats)
