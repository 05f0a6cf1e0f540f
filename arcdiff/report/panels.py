"""PNG panels of a task's grids: a row per test input of input, truth, attempt 1, attempt 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arcdiff.data.inspect import PALETTE
from arcdiff.data.tasks import Grid
from arcdiff.report.views import InputView

_PALETTE_RGB = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], np.uint8)
_LINE_RGB = np.array([85, 85, 85], np.uint8)


def grid_image(grid: Grid, px: int = 120) -> np.ndarray:
    """A grid as an RGB image (about px wide) of palette cells with 1-pixel lines between."""
    h, w = grid.shape
    k = max(3, px // max(h, w))  # pixels per cell, the line included
    image = np.repeat(np.repeat(_PALETTE_RGB[grid], k, axis=0), k, axis=1)  # (h*k, w*k, 3)
    image[::k] = _LINE_RGB
    image[:, ::k] = _LINE_RGB
    return np.pad(image, ((0, 1), (0, 1), (0, 0)), constant_values=_LINE_RGB[0])


TILE_PX, LABEL_PX, GAP_PX = 150, 18, 14  # a panel PNG: one tile per grid, a label above each


def panel_png(path: Path, tests: Sequence[InputView]) -> None:
    """One PNG per task: a row per test input of input, truth, attempt 1, attempt 2.

    The grids are composed into one image in numpy and drawn on a single axes: a figure of
    axes per grid costs ten times as long in matplotlib.
    """
    from matplotlib.figure import Figure

    row_px = LABEL_PX + TILE_PX + GAP_PX
    width, height = 4 * TILE_PX + 5 * GAP_PX, len(tests) * row_px + GAP_PX
    canvas = np.full((height, width, 3), 255, np.uint8)
    labels = []
    for r, test in enumerate(tests):
        top = GAP_PX + r * row_px + LABEL_PX
        for c, (title, grid, ok) in enumerate(test.columns()):
            left = GAP_PX + c * (TILE_PX + GAP_PX)
            if grid is None:
                text = f"{title}: none"
            else:
                image = grid_image(grid, TILE_PX - 1)
                canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
                text = f"{title} {grid.shape[0]}x{grid.shape[1]}"
            text += {True: " ✓", False: " ✗", None: ""}[ok]
            colour = {True: "#1a7f37", False: "#b42318", None: "#333333"}[ok]
            labels.append((left, top - 4, text, colour))
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, colour in labels:
        ax.text(x, y, text, fontsize=8, color=colour, va="bottom", ha="left")
    fig.savefig(path, dpi=100)
