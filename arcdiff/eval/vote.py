"""Majority vote over predictions made under different augmentations.

Each prediction is mapped back to the original frame (the inverse of its augmentation), grids
are hashed, and candidates are ranked by vote count, then by mean confidence. attempt_1 and
attempt_2 are the two best distinct grids; a single candidate fills both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arcdiff.data.tasks import Grid


@dataclass(frozen=True)
class Candidate:
    grid: Grid
    votes: int
    confidence: float  # mean confidence of the predictions that voted for it
    score: float | None = None  # a ranking's score (arcdiff.eval.rank), None under the vote


def grid_key(grid: Grid) -> tuple[tuple[int, ...], bytes]:
    """A hashable identity of a grid: its shape and its bytes."""
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    return grid.shape, grid.tobytes()


def vote(grids: Sequence[Grid], confidences: Sequence[float]) -> list[Candidate]:
    """Distinct grids ranked by votes, then mean confidence (then first appearance)."""
    if len(grids) != len(confidences):
        raise ValueError("one confidence per grid")
    groups: dict[tuple[tuple[int, ...], bytes], list[int]] = {}
    for i, grid in enumerate(grids):
        groups.setdefault(grid_key(grid), []).append(i)
    candidates = [
        Candidate(
            grid=np.ascontiguousarray(grids[members[0]], dtype=np.uint8),
            votes=len(members),
            confidence=float(np.mean([confidences[i] for i in members])),
        )
        for members in groups.values()
    ]
    # sorted() is stable: equal votes and confidence keep the order of first appearance
    return sorted(candidates, key=lambda c: (-c.votes, -c.confidence))


def top2(candidates: Sequence[Candidate]) -> tuple[Grid, Grid]:
    """attempt_1 and attempt_2: the two best distinct candidates (the best twice if alone)."""
    if not candidates:
        raise ValueError("no candidates to choose attempts from")
    first = candidates[0].grid
    second = candidates[1].grid if len(candidates) > 1 else first
    return first, second
