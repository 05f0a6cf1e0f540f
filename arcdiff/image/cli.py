"""``arcdiff image ...``: the image-diffusion track's commands (registered by arcdiff/cli.py).

A user error (arcdiff.errors) ends in one red line on stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arcdiff.console import console, user_errors
from arcdiff.errors import CheckpointError, ConfigError

image_app = typer.Typer(
    help="Gaussian diffusion on 2D toy data (and small images).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@image_app.callback()
def image() -> None:
    """Gaussian diffusion on 2D toy data (and small images)."""


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display and the (description, completed, total) callback that feeds it."""
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(description: str, completed: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=completed)

        yield progress


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


@image_app.command("toy2d")
@user_errors
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
    train_steps: Annotated[int | None, typer.Option(help="Training steps per dataset.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW).")] = None,
    num_timesteps: Annotated[int | None, typer.Option(help="Diffusion training steps T.")] = None,
    t_power: Annotated[
        float | None,
        typer.Option(help="Draw training steps as T * u**p; p > 1 trains more at low noise."),
    ] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine, linear or quadratic.")] = None,
    prediction: Annotated[str | None, typer.Option(help="Model target: eps, v or x0.")] = None,
    zero_terminal_snr: Annotated[
        bool | None,
        typer.Option(help="Rescale the schedule to zero terminal SNR (needs v or x0)."),
    ] = None,
    sampler: Annotated[str | None, typer.Option(help="ddpm (ancestral) or ddim.")] = None,
    eta: Annotated[float | None, typer.Option(help="DDIM eta (0 deterministic).")] = None,
    sample_steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    spacing: Annotated[str | None, typer.Option(help="leading, trailing or linspace.")] = None,
    num_points: Annotated[int | None, typer.Option(help="Points per dataset.")] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Samples drawn for the KL.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, batches and sampling.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Train the 2D toy suite, print the results table, write final_info.json, samples and PNGs.

    Fields come from the defaults, then --config, then the flags, then --set.
    """
    from dataclasses import replace

    from arcdiff.image.embeddings import EMBEDDINGS
    from arcdiff.image.toy2d.config import apply_toy2d_overrides, load_toy2d_config
    from arcdiff.image.toy2d.run import run_toy2d

    embeddings = None if embedding is None else _names(embedding, "--embedding")
    flags = {
        "datasets": None if datasets is None else _names(datasets, "--datasets"),
        "embeddings": EMBEDDINGS if study else embeddings,
        "train_steps": train_steps,
        "batch_size": batch_size,
        "lr": lr,
        "num_timesteps": num_timesteps,
        "t_power": t_power,
        "schedule": schedule,
        "prediction": prediction,
        "zero_terminal_snr": zero_terminal_snr,
        "sampler": sampler,
        "eta": eta,
        "sample_steps": sample_steps,
        "spacing": spacing,
        "num_points": num_points,
        "eval_samples": eval_samples,
        "seed": seed,
        "threads": threads,
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


# --- small images -----------------------------------------------------------------------------

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: section.key=value (repeatable)."),
]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads (default: all).")]


def _run_dir(run: Path) -> Path:
    if not (run / "checkpoints").is_dir():
        raise CheckpointError(f"{run}: not a run directory (no checkpoints/ inside)")
    return run


@image_app.command("train")
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
    """Train a U-Net on images, then write sample grids and diagnostics into the run dir."""
    from arcdiff.image.unet.config import load_image_config
    from arcdiff.image.unet.diagnostics import write_diagnostics
    from arcdiff.image.unet.model import count_parameters
    from arcdiff.image.unet.train import load_data, torch_threads, train_image_model

    cfg = load_image_config(config, set_ or [])
    out_dir = out or Path("outputs") / cfg.name
    load_data(cfg)  # a missing dataset fails here, before anything is written
    console.print(f"[bold]{cfg.name}[/]: {cfg.to_dict()}", soft_wrap=True)
    with torch_threads(cfg.train.threads), progress_bar() as progress:
        run = train_image_model(cfg, out_dir, resume=resume, progress=progress)
        if diagnostics:
            write_diagnostics(run, out_dir, progress=progress)
    summary = orjson.loads((out_dir / "train_summary.json").read_bytes())
    table = Table(title=f"image train: {cfg.name}")
    for column in ("parameters", "steps", "wall s", "CPU s", "final loss", "device"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{count_parameters(run.model):,}",
        str(summary["steps"]),
        f"{summary['wall_s']:.1f}",
        f"{summary['cpu_s']:.1f}",
        f"{summary['final_loss']:.4f}",
        summary["device"],
    )
    console.print(table)
    console.print(f"wrote {out_dir}/checkpoints, metrics.jsonl and PNGs in {out_dir}")


@image_app.command("sample")
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
    """Draw samples from a trained run's EMA model into a PNG grid (one row per class)."""
    import numpy as np
    import torch

    from arcdiff.image.unet import plots
    from arcdiff.image.unet.diagnostics import image_shape, write_diagnostics
    from arcdiff.image.unet.sample import Sampler, generate
    from arcdiff.image.unet.train import load_run, torch_threads

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
        images = generate(
            loaded.ema, loaded.diffusion, noise, labels, how, guidance_scale=scale, seed=seed
        )
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


@image_app.command("sweep")
@user_errors
def sweep(
    run: Annotated[Path, typer.Option(help="Run directory written by `arcdiff image train`.")],
    num_samples: Annotated[int | None, typer.Option(help="Samples per setting.")] = None,
    set_: Sets = None,
    threads: Threads = None,
) -> None:
    """DDIM steps (and DDPM, and guidance) sweep: wall time and sample quality per setting."""
    from dataclasses import replace

    from arcdiff.image.unet.config import apply_image_overrides
    from arcdiff.image.unet.sweep import METRIC_NOTE, run_sweep
    from arcdiff.image.unet.train import load_run, torch_threads

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
    console.print(f"wrote {run}/sweep.json, sweep.png and sweep/*.png")
