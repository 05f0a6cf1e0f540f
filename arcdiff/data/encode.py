"""Grids <-> tokens on a fixed ``max_size x max_size`` canvas.

A grid of shape (h, w) sits in the top-left corner of the canvas; every cell outside it holds
PAD. Output sizes are predicted as two classes, ``h - 1`` and ``w - 1`` in 0..29.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arcdiff.data.tasks import NUM_COLOURS, Grid
from arcdiff.errors import DataError

PAD = NUM_COLOURS  # token 10: outside the grid
VOCAB_SIZE = NUM_COLOURS + 1


def encode_grids(grids: Sequence[Grid], max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Place grids on PAD canvases: tokens (B, S, S) uint8 and sizes (B, 2) int64 as (h, w)."""
    tokens = np.full((len(grids), max_size, max_size), PAD, dtype=np.uint8)
    sizes = np.array([g.shape for g in grids], dtype=np.int64).reshape(len(grids), 2)
    if len(grids) and sizes.max() > max_size:
        b = int(np.argmax(sizes.max(axis=1)))
        h, w = sizes[b].tolist()
        raise DataError(f"a {h}x{w} grid does not fit the {max_size}x{max_size} canvas (max_size)")
    for b, grid in enumerate(grids):  # one slice copy per grid, not per cell
        tokens[b, : grid.shape[0], : grid.shape[1]] = grid
    return tokens, sizes


def grid_mask(sizes: np.ndarray, max_size: int) -> np.ndarray:
    """(B, S, S) bool: True inside each grid of the given (h, w) sizes."""
    ar = np.arange(max_size)
    rows = ar[None, :, None] < sizes[:, 0, None, None]
    cols = ar[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def size_targets(sizes: np.ndarray) -> np.ndarray:
    """(B, 2) class indices h - 1, w - 1 for the output-size head."""
    return sizes - 1


def decode_grids(tokens: np.ndarray, sizes: np.ndarray) -> list[Grid]:
    """Cut each (h, w) grid out of its canvas; PAD inside a grid is an error."""
    grids = []
    for b, (h, w) in enumerate(np.asarray(sizes).tolist()):
        grid = np.ascontiguousarray(tokens[b, :h, :w], dtype=np.uint8)
        if (grid >= NUM_COLOURS).any():
            raise ValueError(f"canvas {b} has PAD inside its {h}x{w} grid")
        grids.append(grid)
    return grids


def canvas_size(tokens: np.ndarray) -> np.ndarray:
    """(B, 2) sizes read back from PAD canvases (extent of the non-PAD top-left block)."""
    inside = tokens != PAD
    return np.stack([inside[:, :, 0].sum(axis=1), inside[:, 0, :].sum(axis=1)], axis=1)
