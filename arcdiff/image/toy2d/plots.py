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
