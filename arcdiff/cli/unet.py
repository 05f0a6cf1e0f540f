"""``arcdiff image train | sample | sweep | vae``: the U-Net track's commands, registered on the
image app by arcdiff/image/cli.py.

A user error (arcdiff.errors) ends in one red line on stderr and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from arcdiff.console import console, user_errors
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.image.progress import progress_bar
from arcdiff.runs.paths import checkpoints_dir

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: section.key=value (repeatable)."),
]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads (default: all).")]


def one_row_table(title: str, row: dict[str, str]) -> Table:
    table = Table(title=title)
    for column in row:
        table.add_column(column, justify="right")
    table.add_row(*row.values())
    return table


def _run_dir(run: Path) -> Path:
    if not checkpoints_dir(run).is_dir():
        raise CheckpointError(f"{run}: not a run directory (no checkpoints/ inside)")
    return run


@user_errors
def train(
    config: Annotated[
        str, typer.Option(help="Config file or preset name (image_digits, image_mnist, ...).")
    ] = "image_digits",
    out: Annotated[Path | None, typer.Option(help="Run directory (default outputs/NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from last.pt.")] = False,
    diagnostics: Annotated[
        bool, typer.Option(help="Write the diagnostic PNGs after training.")
    ] = True,
    set_: Sets = None,
) -> None:
    """Train a U-Net on images.

    Then writes sample grids and diagnostics into the run directory."""
    from arcdiff.image.unet.config import load_image_config
    from arcdiff.image.unet.diagnostics import write_diagnostics
    from arcdiff.image.unet.latent import load_vae_run
    from arcdiff.image.unet.model import count_parameters
    from arcdiff.image.unet.run import load_data, torch_threads
    from arcdiff.image.unet.text import TABLE_FILE, require_encoder
    from arcdiff.image.unet.train import train_image_model

    cfg = load_image_config(config, set_ or [])
    out_dir = out or Path("outputs") / cfg.name
    load_data(cfg)  # a missing dataset fails here, before anything is written
    if cfg.model.text_conditional and not (out_dir / TABLE_FILE).is_file():
        require_encoder(cfg.text.encoder)  # so does a missing encoder
    if cfg.latent.vae_run is not None:
        load_vae_run(Path(cfg.latent.vae_run))  # and a missing or foreign VAE run
    console.print(f"[bold]{cfg.name}[/]: {cfg.to_dict()}", soft_wrap=True)
    with torch_threads(cfg.train.threads), progress_bar() as progress:
        run = train_image_model(cfg, out_dir, resume=resume, progress=progress)
        if diagnostics:
            write_diagnostics(run, out_dir, progress=progress)
    summary = orjson.loads((out_dir / "train_summary.json").read_bytes())
    row = {
        "parameters": f"{count_parameters(run.model):,}",
        "steps": str(summary["steps"]),
        "wall s": f"{summary['wall_s']:.1f}",
        "CPU s": f"{summary['cpu_s']:.1f}",
        "final loss": f"{summary['final_loss']:.4f}",
        "device": summary["device"],
    }
    console.print(one_row_table(f"image train: {cfg.name}", row))
    console.print(f"wrote {out_dir}/checkpoints, metrics.jsonl and PNGs in {out_dir}")


@user_errors
def sample(
    run: Annotated[Path, typer.Option(help="Run directory written by `arcdiff image train`.")],
    num: Annotated[int, typer.Option(help="Samples per class (or in all, unconditional).")] = 8,
    label: Annotated[
        int | None, typer.Option("--class", help="Only this class (default: every class).")
    ] = None,
    unconditional: Annotated[
        bool, typer.Option("--unconditional", help="Ignore classes (the null class).")
    ] = False,
    sampler: Annotated[str | None, typer.Option(help="ddim or ddpm.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise.")] = 0,
    out: Annotated[Path | None, typer.Option(help="PNG to write (an .npz goes beside).")] = None,
    diagnostics: Annotated[
        bool, typer.Option("--diagnostics", help="Also rewrite the run's diagnostic PNGs.")
    ] = False,
    threads: Threads = None,
) -> None:
    """Draw samples of a trained run into a PNG grid.

    The run's EMA model draws one row per class."""
    import numpy as np
    import torch

    from arcdiff.image.unet import plots
    from arcdiff.image.unet.diagnostics import image_shape, write_diagnostics
    from arcdiff.image.unet.run import load_run, torch_threads
    from arcdiff.image.unet.sample import Sampler, draw

    loaded = load_run(_run_dir(run))
    s = loaded.cfg.sample
    how = Sampler(sampler or s.sampler, steps or s.num_steps, s.eta, s.spacing)
    if how.sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"--sampler must be ddim or ddpm, got {how.sampler!r}")
    if not 1 <= how.num_steps <= loaded.diffusion.num_timesteps:
        raise ConfigError(f"--steps must be in 1..{loaded.diffusion.num_timesteps}")
    k = loaded.ema.num_classes
    if label is not None and not 0 <= label < max(k, 1):
        raise ConfigError(f"--class {label} is not a class of this run (0..{k - 1})")
    classes = [] if unconditional or not k else ([label] if label is not None else range(k))
    scale = s.guidance_scale if guidance is None else guidance
    with torch_threads(threads):
        labels = torch.tensor(classes).repeat_interleave(num) if classes else None
        count = len(labels) if labels is not None else num
        noise = torch.randn(
            count, *image_shape(loaded), generator=torch.Generator().manual_seed(seed)
        )
        images = draw(loaded, noise, labels, how, guidance_scale=scale, seed=seed)
        if diagnostics:
            with progress_bar() as progress:
                write_diagnostics(loaded, run, progress=progress)
    name = f"samples_{how.sampler}{how.num_steps}_g{scale:g}_seed{seed}"
    path = out or run / f"{name}.png"
    if classes:
        chunks = images.split(num)
        rows = [(loaded.class_names[c], x.numpy()) for c, x in zip(classes, chunks, strict=True)]
    else:
        rows = [("uncond.", images.numpy())]
    plots.image_grid(
        path,
        rows,
        title=f"{how.sampler} {how.num_steps} steps, guidance {scale:g}, seed {seed}",
    )
    saved_labels = np.full(len(images), -1) if labels is None else labels.numpy()
    np.savez_compressed(path.with_suffix(".npz"), images=images.numpy(), labels=saved_labels)
    console.print(f"wrote {path} ({len(images)} samples)")


@user_errors
def sweep(
    run: Annotated[Path, typer.Option(help="Run directory written by `arcdiff image train`.")],
    num_samples: Annotated[int | None, typer.Option(help="Samples per setting.")] = None,
    set_: Sets = None,
    threads: Threads = None,
) -> None:
    """Sweep the sampling steps: wall time and quality.

    DDIM steps (and DDPM, and guidance): wall time and sample quality per setting."""
    from dataclasses import replace

    from arcdiff.image.unet.config import apply_image_overrides
    from arcdiff.image.unet.run import load_run, torch_threads
    from arcdiff.image.unet.sweep import METRIC_NOTE, run_sweep

    loaded = load_run(_run_dir(run))
    loaded = replace(loaded, cfg=apply_image_overrides(loaded.cfg, set_ or []))
    with torch_threads(threads), progress_bar() as progress:
        result = run_sweep(loaded, run, num_samples=num_samples, progress=progress)
    table = Table(title=f"sampler sweep: {result['num_samples']} samples per setting")
    for column in ("sampler", "steps", "cfg", "wall s", "FD", "prec.", "recall", "class acc."):
        table.add_column(column, justify="left" if column == "sampler" else "right")
    previous = None
    for r in result["rows"]:
        if previous is not None and r["sweep"] != previous:
            table.add_section()  # steps sweep, then guidance sweep
        previous = r["sweep"]
        acc = r["class_accuracy"]
        table.add_row(
            r["sampler"],
            str(r["num_steps"]),
            f"{r['guidance_scale']:g}",
            f"{r['wall_s']:.1f}",
            f"{r['frechet_distance']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            "-" if acc is None else f"{acc:.3f}",
        )
    ref = result["reference"]
    table.add_section()
    table.add_row(
        "real", "-", "-", "-", f"{ref['frechet_distance']:.3f}", f"{ref['precision']:.3f}",
        f"{ref['recall']:.3f}", f"{ref['classifier_test_accuracy']:.3f}",
    )  # fmt: skip
    console.print(table)
    console.print(
        f"real: {ref['note']} (class acc.: the classifier's test accuracy); FD of "
        f"{result['num_samples']} training images (the samples' class counts) to all: "
        f"{ref['frechet_distance_train_subset']:.3f}. FD: Frechet distance; metric: {METRIC_NOTE}",
        soft_wrap=True,
    )
    alignment = result["class_alignment"]
    if alignment is not None:
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in alignment["per_class"].items())
        console.print(
            f"class alignment ({alignment['samples_per_class']} per class, a noise seed per "
            f"class, {alignment['sampler']}, guidance {alignment['guidance_scale']:g}): "
            f"overall {alignment['overall']:.3f}; {per_class}",
            soft_wrap=True,
        )
    console.print(f"wrote {run}/sweep.json, sweep.png and sweep/*.png")


@user_errors
def vae(
    config: Annotated[
        str, typer.Option(help="Config file or preset name whose vae section to train.")
    ] = "image_digits_latent",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run directory (default: the config's latent.vae_run, else outputs/NAME_vae)."
        ),
    ] = None,
    set_: Sets = None,
) -> None:
    """Train the VAE of a latent model.

    Writes reconstruction.png and the reconstruction MSE."""
    from arcdiff.image.unet.config import load_image_config
    from arcdiff.image.unet.run import load_data, torch_threads
    from arcdiff.image.unet.vae_train import train_vae

    cfg = load_image_config(config, set_ or [])
    out_dir = out or Path(cfg.latent.vae_run or f"outputs/{cfg.name}_vae")
    load_data(cfg)  # a missing dataset fails here, before anything is written
    console.print(f"[bold]{cfg.name}[/] vae: {cfg.to_dict()['vae']}", soft_wrap=True)
    with torch_threads(cfg.train.threads), progress_bar() as progress:
        train_vae(cfg, out_dir, progress=progress)
    summary = orjson.loads((out_dir / "vae_summary.json").read_bytes())
    row = {
        "parameters": f"{summary['parameters']:,}",
        "steps": str(summary["steps"]),
        "latents": "x".join(map(str, summary["latent_shape"])),
        "wall s": f"{summary['wall_s']:.1f}",
        "MSE train": f"{summary['reconstruction_mse_train']:.4f}",
        "MSE test": f"{summary['reconstruction_mse_test']:.4f}",
    }
    console.print(one_row_table(f"image vae: {cfg.name}", row))
    console.print(f"wrote {out_dir}/checkpoints/final.pt, vae_summary.json, reconstruction.png")


def register_unet_commands(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("sample")(sample)
    app.command("sweep")(sweep)
    app.command("vae")(vae)
