"""Scores and the ARC Prize submission: the only code that reads test outputs.

A test input is solved at pass@2 when its truth is attempt_1 or attempt_2; a task scores the
fraction of its test inputs solved; a split scores the mean over its tasks. Test inputs whose
output is unknown (hidden test sets) are predicted but not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcdiff.data.tasks import Grid, Task
from arcdiff.eval.vote import Candidate, grid_key


@dataclass(frozen=True)
class TestPrediction:
    """Everything predicted for one test input."""

    __test__ = False  # not a pytest test class, despite the name

    candidates: tuple[Candidate, ...]  # ranked, best first
    attempt_1: Grid
    attempt_2: Grid


Predictions = Mapping[str, Sequence[TestPrediction]]  # task id -> one per test input, in order


def _same(a: Grid, b: Grid) -> bool:
    return grid_key(a) == grid_key(b)


def score_test(pred: TestPrediction, truth: Grid, test_input: Grid) -> dict[str, Any]:
    """Scores of one prediction against its truth."""
    size_ok = pred.attempt_1.shape == truth.shape
    row: dict[str, Any] = {
        "pass1": float(_same(pred.attempt_1, truth)),
        "pass2": float(_same(pred.attempt_1, truth) or _same(pred.attempt_2, truth)),
        "oracle": float(any(_same(c.grid, truth) for c in pred.candidates)),
        "size_ok": float(size_ok),
        "cell_acc": float((pred.attempt_1 == truth).mean()) if size_ok else None,
        "same_shape": test_input.shape == truth.shape,
        "repeated": _same(pred.attempt_1, pred.attempt_2),  # a second attempt thrown away
    }
    if row["same_shape"]:
        row["copy_acc"] = float((test_input == truth).mean())
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def score_split(
    predictions: Predictions,
    tasks: Sequence[Task],
    solutions: Mapping[str, Sequence[Grid | None]],
) -> dict[str, Any]:
    """Per-task and split scores (means over tasks; cell accuracies pooled over test inputs).

    ``cell_accuracy``: the mean, over test inputs whose attempt 1 has the true size, of the
    fraction of its cells right. The same-shape comparison is like for like: the model
    (``cell_accuracy_same_shape``) and copying the input (``copy_baseline_same_shape``) are
    both means over the same test inputs, those whose true output has the input's shape AND
    whose attempt 1 has that size (where the model's cell accuracy is defined); how many
    they are is ``test_inputs_same_shape``. Size errors count in ``size_accuracy``.
    ``repeated_attempts``: test inputs whose attempt 2 is attempt 1 again (a wasted slot)."""
    per_task: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for task in tasks:
        scored = [
            score_test(pred, truth, test_input)
            for pred, truth, test_input in zip(
                predictions[task.id], solutions[task.id], task.test_inputs, strict=True
            )
            if truth is not None
        ]
        if not scored:
            continue
        rows.extend(scored)
        per_task[task.id] = {
            key: _mean([r[key] for r in scored])
            for key in ("pass1", "pass2", "oracle", "size_ok", "cell_acc")
        } | {"test_inputs": len(scored)}
    same_shape = [r for r in rows if r["same_shape"] and r["cell_acc"] is not None]
    summary = {
        "tasks": len(tasks),
        "tasks_scored": len(per_task),
        "test_inputs_scored": len(rows),
        "tasks_solved": sum(t["pass2"] == 1.0 for t in per_task.values()),
        **{
            name: _mean([t[key] for t in per_task.values()])
            for name, key in (
                ("pass@1", "pass1"),
                ("pass@2", "pass2"),
                ("oracle", "oracle"),
                ("size_accuracy", "size_ok"),
            )
        },
        "cell_accuracy": _mean([r["cell_acc"] for r in rows]),
        "cell_accuracy_same_shape": _mean([r["cell_acc"] for r in same_shape]),
        "copy_baseline_same_shape": _mean([r["copy_acc"] for r in same_shape]),
        "test_inputs_same_shape": len(same_shape),
        "repeated_attempts": sum(r["repeated"] for r in rows),
    }
    return {"summary": summary, "per_task": per_task}


def submission(predictions: Predictions) -> dict[str, list[dict[str, list[list[int]]]]]:
    """The ARC Prize format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}."""
    return {
        task_id: [
            {"attempt_1": p.attempt_1.tolist(), "attempt_2": p.attempt_2.tolist()} for p in preds
        ]
        for task_id, preds in predictions.items()
    }


def predictions_json(predictions: Predictions) -> dict[str, Any]:
    """Every candidate of every test input with its votes and confidence."""
    return {
        task_id: [
            {
                "attempt_1": p.attempt_1.tolist(),
                "attempt_2": p.attempt_2.tolist(),
                "candidates": [
                    {"grid": c.grid.tolist(), "votes": c.votes, "confidence": c.confidence}
                    | ({} if c.score is None else {"score": c.score})
                    for c in p.candidates
                ],
            }
            for p in preds
        ]
        for task_id, preds in predictions.items()
    }
