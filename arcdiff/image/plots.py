"""PNG figures of a toy2d run: samples grid, smoothed training loss, learned modulation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(values: np.ndarray, window: int = 200) -> np.ndarray:
    """Moving average with a window that shrinks to fit short runs."""
    window = max(1, min(window, len(values) // 10 or 1))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def samples_grid(
    path: Path, data: dict[str, np.ndarray], samples: dict[str, dict[str, np.ndarray]]
) -> None:
    """Rows: the real data, then one row per embedding variant; columns: datasets."""
    names = list(data)
    rows = [("data", {n: data[n][: len(next(iter(samples.values()))[n])] for n in names})]
    rows += list(samples.items())
    fig, axes = plt.subplots(
        len(rows), len(names), figsize=(3 * len(names), 3 * len(rows)), squeeze=False
    )
    for c, name in enumerate(names):
        lo, hi = np.percentile(data[name], [0.1, 99.9], axis=0)
        pad = 0.15 * (hi - lo).max()
        for r, (label, points) in enumerate(rows):
            ax = axes[r, c]
            pts = points[name]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.4, color="k" if r == 0 else "C0")
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_curves(path: Path, losses: dict[str, dict[str, np.ndarray]]) -> None:
    """One panel per dataset, one smoothed training-loss line per embedding variant."""
    names = list(next(iter(losses.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for c, name in enumerate(names):
        ax = axes[0, c]
        for embedding, per_dataset in losses.items():
            curve = smooth(per_dataset[name])
            offset = (len(per_dataset[name]) - len(curve)) // 2
            ax.plot(np.arange(len(curve)) + offset, curve, label=embedding, lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        if c == 0:
            ax.set_ylabel("train loss (smoothed)")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def modulation_heatmaps(path: Path, modulations: dict[str, dict[str, np.ndarray]]) -> None:
    """Learned modulation of the coordinate embedding per (timestep, frequency): rows are
    variants, columns datasets; frequency index 0 is the highest frequency."""
    variants = list(modulations)
    names = list(next(iter(modulations.values())))
    fig, axes = plt.subplots(
        len(variants), len(names), figsize=(3.6 * len(names), 2.8 * len(variants)), squeeze=False
    )
    for r, variant in enumerate(variants):
        for c, name in enumerate(names):
            ax = axes[r, c]
            table = modulations[variant][name]  # (T, F)
            image = ax.imshow(table.T, aspect="auto", origin="lower", cmap="viridis")
            fig.colorbar(image, ax=ax, fraction=0.046)
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(f"{variant}\nfrequency index")
            if r == len(variants) - 1:
                ax.set_xlabel("timestep")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- image runs ------------------------------------------------------------------------------


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
