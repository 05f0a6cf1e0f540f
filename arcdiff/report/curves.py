"""Training curves from metrics.jsonl as PNGs (matplotlib's object API: no pyplot, no backend)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arcdiff.report.format import finite

BUCKETS = 5  # val_loss_b0..b4, b0 = least noise


def _series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric, skipped steps left out; a re-logged step keeps its last."""
    points = {r["step"]: r[key] for r in metrics if finite(r.get(key)) and not r.get("skipped")}
    steps = np.array(sorted(points), dtype=np.float64)
    return steps, np.array([points[s] for s in sorted(points)], dtype=np.float64)


def smooth(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    alpha = 2.0 / (span + 1)
    out = np.empty_like(values)
    acc = weight = 0.0
    for i, v in enumerate(values):
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


def _figure() -> tuple[Any, Any]:
    """A 640x340 figure with one axes over training steps."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, never 0.2 of one
    return fig, ax


# (key, colour, line width, line style): the total loss is wide and solid, the colour loss
# (most of it, so close beside it) dashed on top, so neither hides the other
LOSSES = (
    ("loss", "#1f1f1f", 2.6, "-"),
    ("colour_loss", "#2e8b57", 1.3, "--"),
    ("size_loss", "#c0504d", 1.3, "-"),
)


def robust_limits(values: Sequence[np.ndarray], log: bool) -> tuple[float, float, bool]:
    """y-limits that hold the 1st to 99th percentile of every series with a margin, so a few
    spikes (the raw size loss) do not set the axis; also whether anything lies outside."""
    low = min(float(np.percentile(v, 1)) for v in values)
    high = max(float(np.percentile(v, 99)) for v in values)
    if log:
        bottom, top = low / 1.3, high * 1.3
    else:
        pad = 0.08 * (high - low or abs(high) or 1.0)
        bottom, top = low - pad, high + pad
    clipped = any(float(v.max()) > top or float(v.min()) < bottom for v in values)
    return bottom, top, clipped


def _plot_losses(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    fig, ax = _figure()
    drawn = []
    for key, colour, width, style in LOSSES:
        steps, values = _series(metrics, key)
        if not len(steps):
            continue
        span = int(np.clip(len(values) // 40, 1, 500))
        ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        label = "loss (total)" if key == "loss" else key
        smoothed = smooth(values, span)
        ax.plot(steps, smoothed, color=colour, linewidth=width, linestyle=style, label=label)
        drawn.append(values)
    if not drawn:
        return False
    skipped = [r["step"] for r in metrics if r.get("skipped")]
    for i, step in enumerate(skipped):
        ax.axvline(step, color="red", alpha=0.4, linewidth=0.8, label="skipped" if not i else None)
    low, high = min(v.min() for v in drawn), max(v.max() for v in drawn)
    log = bool(low > 0 and high / low > 4)  # a loss that falls far reads better on a log scale
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    bottom, top, clipped = robust_limits(drawn, log)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("loss")
    title = "training loss (faint: raw, solid: smoothed)"
    # the clipping note on a line of its own: one line of both is wider than the figure
    ax.set_title(title + ("\nspikes beyond the 99th percentile clipped" if clipped else ""))
    ax.legend(frameon=False)
    fig.savefig(path)
    return True


def _minor_log_label(y: float, _: Any) -> str:
    """Minor ticks of a log axis: label 2, 3 and 5 times a power of ten, no others."""
    mantissa = round(y / 10 ** math.floor(math.log10(y))) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def _plot_lr(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    steps, values = _series(metrics, "lr")
    if not len(steps):
        return False
    fig, ax = _figure()
    ax.plot(steps, values, color="#1f4e79", linewidth=1.6)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")
    fig.savefig(path)
    return True


def _plot_validation(what: str) -> Callable[[Sequence[dict[str, Any]], Path], bool]:
    """A plot of val_<what> per noise bucket (b0 = least noise) and over all buckets."""

    def plot(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
        steps, values = _series(metrics, f"val_{what}")
        if not len(steps):
            return False
        from matplotlib import colormaps

        fig, ax = _figure()
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, BUCKETS))
        for b in range(BUCKETS):
            b_steps, b_values = _series(metrics, f"val_{what}_b{b}")
            if len(b_steps):
                label = f"b{b}" + {0: " (least noise)", BUCKETS - 1: " (most noise)"}.get(b, "")
                marker = "o" if len(b_steps) <= 60 else None
                ax.plot(
                    b_steps, b_values, color=colours[b], marker=marker, markersize=3, label=label
                )
        ax.plot(steps, values, color="black", linestyle="--", linewidth=1.4, label="all")
        if what == "acc":
            ax.yaxis.set_major_formatter(_percent())
        name = "loss" if what == "loss" else "cell accuracy"
        ax.set_title(f"validation {name} by noise level")
        fig.legend(frameon=False, fontsize=8, loc="outside right upper")
        fig.savefig(path)
        return True

    return plot


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def _plot_quick(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    steps, values = _series(metrics, "quick_pass2")
    if not len(steps):
        return False
    fig, ax = _figure()
    marker = "o" if len(steps) <= 60 else None
    top = float(values.max())
    ax.plot(steps, values, color="#1f4e79", marker=marker, markersize=3, label="pass@2")
    steps, values = _series(metrics, "quick_oracle")
    if len(steps):
        ax.plot(steps, values, color="#c0504d", marker=marker, markersize=3, label="oracle")
        top = max(top, float(values.max()))
    # a little room below 0 and at least 10% above, so a run of zeros reads as a line of
    # zeros, not as the axis itself
    ax.set_ylim(-0.02, max(0.1, top * 1.15))
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= max(0.1, top * 1.15)])
    ax.set_ylim(-0.02, max(0.1, top * 1.15))
    ax.yaxis.set_major_formatter(_percent())
    ax.set_ylabel("tasks")
    note = "; nothing solved yet" if top == 0 else ""
    ax.set_title(f"quick evaluation during training (no vote){note}")
    ax.legend(frameon=False)
    fig.savefig(path)
    return True


# (PNG file name, title, plot(metrics, path) -> whether there was anything to draw)
CURVES = (
    ("loss.png", "training loss", _plot_losses),
    ("lr.png", "learning rate", _plot_lr),
    ("val_acc.png", "validation cell accuracy by noise level", _plot_validation("acc")),
    ("val_loss.png", "validation loss by noise level", _plot_validation("loss")),
    ("quick_eval.png", "quick evaluation", _plot_quick),
)
