"""The facts a report states, as (label, value) text: shared by the terminal, markdown and HTML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arcdiff.report.format import duration, finite, num, pct


def summary_rows(scores: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of an evaluation's scores and settings."""
    s = scores.get("summary") or {}
    st = scores.get("settings") or {}
    scored = s.get("tasks_scored")
    augs = st.get("num_augs")
    votes = f"{augs} (majority vote)" if st.get("maj") else "1 (no vote)"
    checkpoint = st.get("checkpoint") or "—"
    if st.get("use_ema"):
        checkpoint += " (EMA)"
    return [
        ("tasks", f"{scored if scored is not None else '—'} scored of {s.get('tasks', '—')}"),
        ("test inputs scored", str(s.get("test_inputs_scored", "—"))),
        ("tasks solved", f"{s.get('tasks_solved', '—')} / {scored if scored is not None else '—'}"),
        ("pass@1", pct(s.get("pass@1"))),
        ("pass@2", pct(s.get("pass@2"))),
        ("oracle (truth among candidates)", pct(s.get("oracle"))),
        ("size accuracy", pct(s.get("size_accuracy"))),
        ("cell accuracy (size-correct attempt 1)", pct(s.get("cell_accuracy"))),
        (
            "same-shape tests: cell accuracy vs copy-the-input",
            f"{pct(s.get('cell_accuracy_same_shape'))} vs {pct(s.get('copy_baseline_same_shape'))}",
        ),
        ("sampling steps", str(st.get("num_steps", "—"))),
        ("sampler", sampler_text(st)),
        ("augmentations", votes if augs is not None else "—"),
        ("candidates per view", str(st.get("samples", 1))),
        ("ranking", ranking_text(st)),
        ("checkpoint", f"{checkpoint}, step {st.get('step', '—')}"),
        ("wall time", f"{duration(st.get('wall_s'))} on {st.get('device') or '—'}"),
    ]


def sampler_text(st: dict[str, Any]) -> str:
    """The sampler an evaluation used; scores from before samplers had names used argmax."""
    name = st.get("sampler", "argmax")
    if name != "confidence":
        return name
    temperature = st.get("temperature", 0.0)
    drawn = f"temperature {temperature:g}" if temperature else "argmax colours"
    return f"confidence-ordered, {drawn}" + (", remasking" if st.get("remask") else "")


def ranking_text(st: dict[str, Any]) -> str:
    """The ranking an evaluation used (count-then-confidence before rankings had names)."""
    if st.get("ranking", "vote") == "vote":
        return "vote (count, then confidence)"
    weight, top = st.get("visit_weight", 1.0), st.get("rank_top", 8)
    return f"product of experts over the top {top} + {weight:g} x log(1 + visits)"


def _last(metrics: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in reversed(metrics) if finite(r.get(key))), None)


def training_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, value) lines summing up metrics.jsonl."""
    losses = [r["loss"] for r in metrics if finite(r.get("loss")) and not r.get("skipped")]
    done = next((r for r in reversed(metrics) if "done" in r), None)
    val = _last(metrics, "val_acc")
    quick = _last(metrics, "quick_pass2")
    minutes = _last(metrics, "minutes")
    speed = [r["examples_per_s"] for r in metrics[-50:] if finite(r.get("examples_per_s"))]
    steps = max((r["step"] for r in metrics if finite(r.get("step"))), default=None)
    rows = [
        ("steps", f"{steps}" + (f" (stopped: {done['done']})" if done else " (still running?)")),
        ("skipped steps", str(sum(bool(r.get("skipped")) for r in metrics))),
        ("train loss (mean of last 10)", num(np.mean(losses[-10:]) if losses else None)),
        (
            "val loss / acc",
            f"{num(val.get('val_loss'))} / {pct(val['val_acc'])} at step {val['step']}"
            if val
            else "—",
        ),
        ("training time", duration(60 * minutes["minutes"]) if minutes else "—"),
        ("examples/s (median, last 50)", num(np.median(speed) if speed else None, "{:,.1f}")),
    ]
    if quick:
        rows.append(
            (
                "quick eval pass@2 / oracle",
                f"{pct(quick['quick_pass2'])} / {pct(quick.get('quick_oracle'))} "
                f"at step {quick['step']}",
            )
        )
    return rows


def sorted_tasks(scores: dict[str, Any] | None, predictions: dict[str, Any] | None) -> list[str]:
    """Solved tasks first, then partly solved, then the rest, then unscored; by id within."""
    per_task = (scores or {}).get("per_task") or {}
    ids = list(dict.fromkeys([*per_task, *(predictions or {})]))

    def key(task_id: str) -> tuple[int, float, str]:
        pass2 = (per_task.get(task_id) or {}).get("pass2")
        return (0, -pass2, task_id) if finite(pass2) else (1, 0.0, task_id)

    return sorted(ids, key=key)


def task_line(t: dict[str, Any]) -> str:
    """One task's scores on one line."""
    return (
        f"pass@1 {pct(t.get('pass1'))} · pass@2 {pct(t.get('pass2'))} · "
        f"oracle {pct(t.get('oracle'))} · size {pct(t.get('size_ok'))} · "
        f"cell acc {pct(t.get('cell_acc'))}"
    )
