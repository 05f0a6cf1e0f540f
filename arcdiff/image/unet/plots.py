"""PNG figures of an image run: image grids (one mosaic), loss per timestep, training curve,
sampler sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _as_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W) or (N, H, W, 3) in [0, 1]."""
    x = np.clip((np.asarray(images, dtype=np.float32) + 1) / 2, 0, 1)
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def mosaic(rows: list[np.ndarray], pad: int = 1) -> np.ndarray:
    """Rows of (N, H, W[, 3]) images tiled into one array, ``pad`` white pixels between cells."""
    cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    shape = (len(rows) * (h + pad) + pad, cols * (w + pad) + pad, *rows[0].shape[3:])
    canvas = np.ones(shape, dtype=np.float32)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = image
    return canvas


def image_grid(
    path: Path,
    rows: list[tuple[str, np.ndarray]],
    *,
    title: str = "",
    column_labels: list[str] | None = None,
    cell: float = 0.7,
) -> None:
    """One labelled row of images per entry; images (N, C, H, W) in [-1, 1].

    Drawn as one mosaic in a single axes: a figure of many small axes takes seconds to render.
    """
    shown = [_as_display(images) for _, images in rows]
    cols = max(len(images) for images in shown)
    h, w = shown[0].shape[1:3]
    fig, ax = plt.subplots(figsize=(cell * cols + 1.2, cell * len(rows) * h / w + 0.8))
    ax.imshow(mosaic(shown), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    if column_labels is not None:
        ax.set_xticks([1 + c * (w + 1) + w / 2 for c in range(len(column_labels))])
        ax.set_xticklabels(column_labels, fontsize=7)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, pad=14 if column_labels else 4)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps long row labels inside
    plt.close(fig)


def loss_per_timestep(path: Path, centres: np.ndarray, losses: np.ndarray, label: str) -> None:
    """Mean diffusion loss of the model per timestep bucket."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(centres, losses, marker="o")
    ax.set_xlabel("training step t (bucket centre)")
    ax.set_ylabel(label)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curve(path: Path, steps: np.ndarray, losses: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_plot(path: Path, rows: list[dict], *, metric_note: str) -> None:
    """Steps sweep: quality and wall time per sampler (DDIM on a log axis, DDPM marked);
    guidance sweep (if any): quality per guidance scale."""
    steps = [r for r in rows if r["sweep"] == "steps"]
    guided = [r for r in rows if r["sweep"] == "guidance"]
    panels = [
        ("frechet_distance", "Frechet distance (classifier features)"),
        ("class_accuracy", "class accuracy"),
        ("wall_s", "wall time (s)"),
    ]
    fig, axes = plt.subplots(1, 4 if guided else 3, figsize=(15 if guided else 12, 3.4))
    for ax, (key, label) in zip(axes, panels, strict=False):
        ddim = [r for r in steps if r["sampler"] == "ddim"]
        ax.plot([r["num_steps"] for r in ddim], [r[key] for r in ddim], marker="o", label="DDIM")
        for r in steps:
            if r["sampler"] == "ddpm":
                ax.scatter([r["num_steps"]], [r[key]], color="C3", marker="s", label="DDPM")
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if guided:
        ax = axes[3]
        scales = [r["guidance_scale"] for r in guided]
        ax.plot(scales, [r["frechet_distance"] for r in guided], marker="o", label="Frechet")
        ax.set_xlabel(f"guidance scale ({guided[0]['sampler']} {guided[0]['num_steps']} steps)")
        ax.set_ylabel("Frechet distance")
        twin = ax.twinx()
        twin.plot(
            scales, [r["class_accuracy"] for r in guided], marker="s", color="C2", label="acc."
        )
        twin.set_ylabel("class accuracy", color="C2")
        ax.grid(alpha=0.3)
    fig.suptitle(metric_note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
