"""What a task source holds: counts, grid sizes and colours (no rendering)."""

from __future__ import annotations

from typing import Any

import numpy as np

from arcdiff.data.tasks import MAX_SIDE, NUM_COLOURS, Grid, TaskSet

SIZE_BUCKETS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30))


def summarize(tasks: TaskSet) -> dict[str, Any]:
    """Counts over demonstrations and test inputs (of test outputs, only how many are known)."""
    grids: list[Grid] = [g for task in tasks for g in task.grids()]
    sides = np.array([max(g.shape) for g in grids], dtype=np.int64) if grids else np.zeros(0)
    colours = np.zeros(NUM_COLOURS, dtype=np.int64)
    for g in grids:
        colours += np.bincount(g.ravel(), minlength=NUM_COLOURS)
    return {
        "source": tasks.name,
        "tasks": len(tasks),
        "demonstration_pairs": sum(len(t.demos) for t in tasks),
        "test_inputs": sum(len(t.test_inputs) for t in tasks),
        "test_outputs_known": sum(o is not None for t in tasks for o in tasks.solutions[t.id]),
        "largest_side": int(sides.max()) if len(sides) else 0,
        "grid_side_histogram": {
            f"{lo}-{hi}": int(((sides >= lo) & (sides <= hi)).sum()) for lo, hi in SIZE_BUCKETS
        },
        "tasks_by_largest_side": {
            f"{lo}-{hi}": sum(lo <= t.max_side <= hi for t in tasks) for lo, hi in SIZE_BUCKETS
        },
        "colour_counts": colours.tolist(),
    }


assert SIZE_BUCKETS[-1][1] == MAX_SIDE
