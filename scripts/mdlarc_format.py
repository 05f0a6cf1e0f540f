"""mdlARC's file formats for the benchmark (scripts/bench_mdlarc.py), kept apart so a test can
run them.

mdlARC trains on one file, ``assets/challenges.json`` (its dataset_building_scripts/
build_datasets.py): every training task "flattened" (its test pairs moved into "train", no
"test" key) and every evaluation task with its demonstrations as "train" and its test inputs,
without outputs, as "test". Training reads the "train" pairs of all tasks; evaluation generates
an output for each "test" input and writes an ARC Prize submission.json. Its solutions.json
(for its own scoring) is never written: arcdiff's scorer scores the submission.

No mdlARC code is here: only the shapes of its files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from peer_format import _fits, _grid

from arcdiff.data.tasks import Task, TaskSet
from arcdiff.errors import DataError

CHALLENGES = Path("assets/challenges.json")  # relative to mdlARC's working directory
SOLUTIONS = Path("assets/solutions.json")  # mdlARC's own scoring file: must not exist


def _pairs(pairs: Iterable[tuple[Any, Any]]) -> list[dict[str, Any]]:
    return [{"input": _grid(i), "output": _grid(o)} for i, o in pairs]


def write_mdlarc_data(
    root: Path, train: TaskSet, evals: Sequence[Task], max_size: int
) -> dict[str, int]:
    """Write ``assets/challenges.json`` under ``root``; returns the counts written.

    Training tasks give their demonstrations and the test pairs whose output is known and fits
    ``max_size`` (as the peer benchmark), all as "train". Evaluation tasks give demonstrations
    and test inputs only: their outputs stay with arcdiff's scorer.
    """
    challenges: dict[str, Any] = {}
    for task in train:
        tests = [
            (i, o)
            for i, o in zip(task.test_inputs, train.solutions[task.id], strict=True)
            if o is not None and _fits(o, max_size)
        ]
        challenges[task.id] = {"train": _pairs([(p.input, p.output) for p in task.demos] + tests)}
    for task in evals:
        if task.id in challenges:
            raise DataError(f"task {task.id} is both a training and an evaluation task")
        challenges[task.id] = {
            "train": _pairs((p.input, p.output) for p in task.demos),
            "test": [{"input": _grid(i)} for i in task.test_inputs],
        }
    path = root / CHALLENGES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(challenges))
    (root / SOLUTIONS).unlink(missing_ok=True)  # a stale one: mdlARC must not read outputs
    return {
        "train_tasks": len(train),
        "eval_tasks": len(evals),
        "train_sequences": sum(len(t["train"]) for t in challenges.values()),
        "eval_test_inputs": sum(len(t.test_inputs) for t in evals),
    }


def mdlarc_submission(submission: Mapping[str, Any], tasks: Iterable[Task]) -> dict[str, Any]:
    """arcdiff's submission from mdlARC's submission.json (the same ARC Prize shape: task id ->
    one {"attempt_1", "attempt_2"} per test input, in order). A task mdlARC wrote nothing for
    gets [[0]] attempts, which score as wrong; a task with another number of entries than test
    inputs is a DataError (which entry is which test input is then unknown)."""
    out: dict[str, Any] = {}
    for task in tasks:
        entries = submission.get(task.id)
        if entries is None:
            entries = [{"attempt_1": [[0]], "attempt_2": [[0]]}] * len(task.test_inputs)
        if len(entries) != len(task.test_inputs):
            raise DataError(
                f"mdlARC submission: task {task.id} has {len(entries)} entries, "
                f"the task {len(task.test_inputs)} test inputs"
            )
        out[task.id] = [
            {k: entry.get(k) or [[0]] for k in ("attempt_1", "attempt_2")} for entry in entries
        ]
    return out
