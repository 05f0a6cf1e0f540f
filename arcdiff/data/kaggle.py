"""A task source as a Kaggle pair: ``NAME_challenges.json`` (demonstrations and test inputs, what
a competition gives) and ``NAME_solutions.json`` (the test outputs, for the scorer alone)."""

from __future__ import annotations

from typing import Any

from arcdiff.data.tasks import Grid, TaskSet
from arcdiff.errors import DataError


def _grid(g: Grid) -> list[list[int]]:
    return g.tolist()


def kaggle_files(tasks: TaskSet) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The challenges file's object and, when every test output is known, the solutions file's
    (None where one is hidden)."""
    if not len(tasks):
        raise DataError(f"{tasks.name}: no tasks to write")
    challenges = {
        t.id: {
            "train": [{"input": _grid(p.input), "output": _grid(p.output)} for p in t.demos],
            "test": [{"input": _grid(g)} for g in t.test_inputs],
        }
        for t in tasks
    }
    outputs = {t.id: tasks.solutions.get(t.id, ()) for t in tasks}
    if any(o is None for outs in outputs.values() for o in outs):
        return challenges, None
    return challenges, {i: [_grid(o) for o in outs] for i, outs in outputs.items()}
