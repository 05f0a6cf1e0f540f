"""``arcdiff image ...``: the image-diffusion track's commands (registered by arcdiff/cli.py).

A user error (arcdiff.errors) ends in one red line on stderr and exit code 1.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from arcdiff.cli.options import FieldOption, with_field_options
from arcdiff.cli.unet import register_unet_commands
from arcdiff.console import console, user_errors
from arcdiff.errors import ConfigError
from arcdiff.image.progress import progress_bar

image_app = typer.Typer(
    help="Gaussian diffusion on 2D toy data (and small images).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@image_app.callback()
def image() -> None:
    """Gaussian diffusion on 2D toy data (and small images)."""


def _names(value: str, option: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise ConfigError(f"{option} is empty")
    return names


def results_table(results: dict[str, dict[str, dict[str, float]]]) -> Table:
    from arcdiff.image.toy2d.run import BASELINE_KL

    table = Table(title="toy2d results (KL: kNN estimate, k=5, bits; lower is better)")
    for column in ("embedding", "dataset", "train s", "eval loss", "sample s", "KL", "baseline KL"):
        table.add_column(column, justify="left" if column in ("embedding", "dataset") else "right")
    for embedding, per_dataset in results.items():
        for name, m in per_dataset.items():
            base = BASELINE_KL.get(name)
            kl = m["kl_divergence"]
            style = "green" if base is not None and kl < base else "red"
            table.add_row(
                embedding,
                name,
                f"{m['training_time']:.1f}",
                f"{m['eval_loss']:.4f}",
                f"{m['inference_time']:.2f}",
                f"[{style}]{kl:.4f}[/]",
                "-" if base is None else f"{base:.4f}",
            )
    return table


TOY2D_HELP = {  # the Toy2dConfig fields with an option of their own; any field: --set key=value
    "train_steps": "Training steps per dataset.",
    "batch_size": "Training batch size.",
    "lr": "Peak learning rate (AdamW).",
    "num_timesteps": "Diffusion training steps T.",
    "t_power": "Draw training steps as T * u**p; p > 1 trains more at low noise.",
    "schedule": "cosine, linear or quadratic.",
    "prediction": "Model target: eps, v or x0.",
    "zero_terminal_snr": "Rescale the schedule to zero terminal SNR (needs v or x0).",
    "sampler": "ddpm (ancestral) or ddim.",
    "eta": "DDIM eta (0 deterministic).",
    "sample_steps": "Sampling steps.",
    "spacing": "leading, trailing or linspace.",
    "num_points": "Points per dataset.",
    "eval_samples": "Samples drawn for the KL.",
    "seed": "Seed of init, batches and sampling.",
    "threads": "torch CPU threads.",
}


def _toy2d_options() -> list[FieldOption]:
    from arcdiff.image.toy2d.config import Toy2dConfig

    hints = typing.get_type_hints(Toy2dConfig)
    flag = {"zero_terminal_snr": "--zero-terminal-snr/--no-zero-terminal-snr"}
    return [
        FieldOption(name, hints[name], flag.get(name, "--" + name.replace("_", "-")), text)
        for name, text in TOY2D_HELP.items()
    ]


@image_app.command("toy2d")
@user_errors
@functools.partial(with_field_options, options=_toy2d_options(), into="flags")
def toy2d(
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of toy2d config fields (a run's config.json works too)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config field: key=value, applied last (repeatable)."
        ),
    ] = None,
    datasets: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated toy datasets: circle, dino, line, moons (default: all four)."
        ),
    ] = None,
    embedding: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated embedding variants: sinusoidal (default), scaled, time_mlp, "
            "band_attention."
        ),
    ] = None,
    study: Annotated[
        bool,
        typer.Option(
            "--study",
            help="Hybrid adaptive embeddings study: every embedding variant, plus modulation.png.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default outputs/toy2d, or outputs/toy2d_study)."),
    ] = None,
    dino_tsv: Annotated[
        Path | None,
        typer.Option(
            envvar="ARCDIFF_DATASAURUS",
            help="DatasaurusDozen.tsv for the dino dataset (default data/DatasaurusDozen.tsv).",
        ),
    ] = None,
    flags: dict[str, Any] | None = None,
) -> None:
    """Train the 2D toy suite and print its results table.

    Writes final_info.json, samples and PNGs.

    Fields come from the defaults, then --config, then the flags, then --set.
    """
    from dataclasses import replace

    from arcdiff.image.embeddings import EMBEDDINGS
    from arcdiff.image.toy2d.config import apply_toy2d_overrides, load_toy2d_config
    from arcdiff.image.toy2d.run import run_toy2d

    embeddings = None if embedding is None else _names(embedding, "--embedding")
    flags = {
        **(flags or {}),
        "datasets": None if datasets is None else _names(datasets, "--datasets"),
        "embeddings": EMBEDDINGS if study else embeddings,
    }
    cfg = load_toy2d_config(config)
    cfg = replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    cfg = apply_toy2d_overrides(cfg, set_ or [])
    if cfg.zero_terminal_snr and cfg.prediction == "eps":
        raise ConfigError("--zero-terminal-snr needs --prediction v or x0")
    if "dino" in cfg.datasets:  # fail before any training if the TSV is missing
        from arcdiff.image.toy2d.data import datasaurus_path

        datasaurus_path(dino_tsv)
    out_dir = out or Path("outputs/toy2d_study" if study else "outputs/toy2d")

    with progress_bar() as progress:
        results = run_toy2d(cfg, out_dir, dino_tsv=dino_tsv, progress=progress)
    console.print(results_table(results))
    summary = out_dir / "results.json"
    console.print(f"wrote {summary}, {out_dir}/<embedding>/final_info.json and PNGs in {out_dir}")


register_unet_commands(image_app)  # train, sample, sweep, vae
