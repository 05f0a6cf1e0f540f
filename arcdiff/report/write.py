"""write_report: a run directory's report/{report.md, report.html} with its curves and panels."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from arcdiff.report.curves import CURVES
from arcdiff.report.html import page
from arcdiff.report.markdown import markdown
from arcdiff.report.panels import panel_png
from arcdiff.report.read import RunFiles, params_text, read_run
from arcdiff.report.views import Report, split_report
from arcdiff.runs.lock import run_lock
from arcdiff.runs.paths import check_writable


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``out`` (default run_dir/report/): report.md with its PNGs beside it, and
    report.html, one file with every plot embedded; returns the HTML path.

    A missing run directory is a CheckpointError; anything missing inside it (evaluation,
    metrics, config) is noted in the report. Writing into the run holds its lock."""
    run = read_run(Path(run_dir))
    out = out or run.path / "report"
    inside = out.resolve().is_relative_to(run.path.resolve())
    with run_lock(run.path, "report") if inside else contextlib.nullcontext():
        return _write(run, out)


def _write(run: RunFiles, out: Path) -> Path:
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if run.config is None:
        notes.append("no config.json in the run directory")
    if not run.metrics:
        notes.append("no metrics.jsonl yet: training has not logged a step")
    if not run.evals:
        notes.append(f"no evaluation yet: run `arcdiff evaluate --run {run.path}` to score the run")

    curves = []
    for filename, title, plot in CURVES:
        path = out / filename
        if run.metrics and plot(run.metrics, path):
            curves.append((filename, title))
        elif path.exists():
            path.unlink()  # a stale plot from an earlier report
    if run.metrics and not any(f == "val_acc.png" for f, _ in curves):
        notes.append("no validation rows in metrics.jsonl yet (logged every train.eval_every)")

    tasks_dir = out / "tasks"
    if tasks_dir.exists():
        shutil.rmtree(tasks_dir)  # panels of tasks no longer evaluated must not linger
    splits = []
    for ev in run.evals:
        split = split_report(ev)
        panel_dir = tasks_dir / ev.dirname
        panel_dir.mkdir(parents=True, exist_ok=True)
        for task_id, task_views in split.views.items():
            if task_views:
                panel_png(panel_dir / f"{task_id}.png", task_views)
        splits.append(split)

    params, note = params_text(run)
    if note:
        notes.append(f"parameters unknown: {note}")
    generated = time.strftime("%Y-%m-%d %H:%M")
    report = Report(run, params, notes, curves, splits, generated)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(page(report, out), encoding="utf-8")
    return html_path
