"""What a report shows: per evaluated split, each test input's input, truth and attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from arcdiff.data.tasks import Grid, load_tasks
from arcdiff.errors import DataError
from arcdiff.report.rows import sorted_tasks, summary_rows
from arcdiff.runs.paths import RunFiles, SplitEval


def as_grid(value: Any) -> Grid | None:
    return None if value is None else np.asarray(value, dtype=np.uint8)


def same(a: Grid | None, b: Grid | None) -> bool | None:
    if a is None or b is None:
        return None
    return a.shape == b.shape and bool((a == b).all())


@dataclass(frozen=True)
class InputView:
    """One test input of a task as the report draws it."""

    input: Grid | None
    truth: Grid | None
    attempts: tuple[Grid | None, Grid | None]
    votes: tuple[int | None, int | None]
    total_votes: int

    def columns(self) -> list[tuple[str, Grid | None, bool | None]]:
        return [
            ("input", self.input, None),
            ("truth", self.truth, None),
            *((f"attempt {i + 1}", a, same(a, self.truth)) for i, a in enumerate(self.attempts)),
        ]


def task_views(
    task_id: str, predictions: dict[str, Any] | None, truths: dict[str, Any]
) -> list[InputView]:
    preds = (predictions or {}).get(task_id) or []
    inputs, outputs = truths.get(task_id, ((), ()))
    views = []
    for i in range(max(len(preds), len(inputs))):
        pred = preds[i] if i < len(preds) else {}
        attempts = (as_grid(pred.get("attempt_1")), as_grid(pred.get("attempt_2")))
        candidates = pred.get("candidates") or []
        # a candidate's grid is JSON as written by score.predictions_json: compare as JSON
        votes_of = {orjson.dumps(c.get("grid")): c.get("votes") for c in reversed(candidates)}
        votes = tuple(
            None if a is None else votes_of.get(orjson.dumps(a.tolist())) for a in attempts
        )
        views.append(
            InputView(
                input=inputs[i] if i < len(inputs) else None,
                truth=outputs[i] if i < len(outputs) else None,
                attempts=attempts,
                votes=(votes[0], votes[1]),
                total_votes=sum(c.get("votes") or 0 for c in candidates),
            )
        )
    return views


def load_truths(split: str, task_ids: list[str]) -> tuple[dict[str, Any], str | None]:
    """{task_id: (test inputs, test outputs)} from the split's source, or a note why not."""
    if not task_ids:
        return {}, None
    try:
        tasks = load_tasks(split, ids=task_ids, missing_ok=True)
    except DataError as e:
        return {}, f"test inputs and outputs could not be read from {split}: {e}"
    found = {t.id: (t.test_inputs, tasks.solutions[t.id]) for t in tasks}
    missing = [t for t in task_ids if t not in found]
    note = (
        f"{len(missing)} task(s) not found in {split}: {', '.join(missing[:10])}"
        if missing
        else None
    )
    return found, note


@dataclass
class SplitReport:
    eval: SplitEval
    task_ids: list[str]
    views: dict[str, list[InputView]]
    notes: list[str]

    def task_scores(self, task_id: str) -> dict[str, Any]:
        return ((self.eval.scores or {}).get("per_task") or {}).get(task_id) or {}


def split_report(ev: SplitEval) -> SplitReport:
    """The split's tasks, solved first, with their views and notes on what is missing."""
    notes = []
    if ev.scores is None:
        notes.append(f"eval/{ev.dirname}/scores.json is missing")
    if ev.predictions is None:
        notes.append(f"eval/{ev.dirname}/predictions.json is missing: no attempts")
    task_ids = sorted_tasks(ev.scores, ev.predictions)
    truths, note = load_truths(ev.split, task_ids)
    if note:
        notes.append(note)
    views = {t: task_views(t, ev.predictions, truths) for t in task_ids}
    return SplitReport(ev, task_ids, views, notes)


def score_columns(splits: Sequence[SplitReport]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Column headers (splits) and (label, values) rows of the scores table."""
    scored = [s for s in splits if s.eval.scores]
    rows = [summary_rows(s.eval.scores or {}) for s in scored]
    labels = [label for label, _ in rows[0]] if rows else []
    return [s.eval.split for s in scored], [
        (label, [r[i][1] for r in rows]) for i, label in enumerate(labels)
    ]


@dataclass(frozen=True)
class Report:
    """What the markdown and the HTML page both show of a run."""

    run: RunFiles
    params: str  # the parameter count as text
    notes: list[str]  # what the run directory lacks
    curves: list[tuple[str, str]]  # (PNG file name, title) of the curves drawn
    splits: list[SplitReport]
    generated: str  # when, as the page says it
