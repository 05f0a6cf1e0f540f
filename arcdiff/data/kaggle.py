"""A task source as a Kaggle pair: ``NAME_challenges.json`` (demonstrations and test inputs, what
a competition gives) and ``NAME_solutions.json`` (the test outputs, for the scorer alone)."""

from __future__ import annotations

from pathlib import Path

from arcdiff.data.tasks import Grid, TaskSet
from arcdiff.errors import DataError
from arcdiff.runs.paths import write_json


def _grid(g: Grid) -> list[list[int]]:
    return g.tolist()


def write_kaggle(tasks: TaskSet, folder: Path, name: str) -> tuple[Path, Path | None]:
    """Write the challenges file and, when every test output is known, the solutions file."""
    if not len(tasks):
        raise DataError(f"{tasks.name}: no tasks to write")
    challenges = {
        t.id: {
            "train": [{"input": _grid(p.input), "output": _grid(p.output)} for p in t.demos],
            "test": [{"input": _grid(g)} for g in t.test_inputs],
        }
        for t in tasks
    }
    path = folder / f"{name}_challenges.json"
    write_json(path, challenges)
    outputs = {t.id: tasks.solutions.get(t.id, ()) for t in tasks}
    if any(o is None for outs in outputs.values() for o in outs):
        return path, None  # a hidden test output: no solutions file
    solutions = folder / f"{name}_solutions.json"
    write_json(solutions, {i: [_grid(o) for o in outs] for i, outs in outputs.items()})
    return path, solutions
