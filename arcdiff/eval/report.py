"""Reports of a run: score tables for the terminal, and report/report.{md,html} with plots.

``write_report`` reads a run directory (config.json, metrics.jsonl, eval/<split>/) and writes
a markdown and an HTML page with training curves and, for every evaluated task, its test
inputs, the truth and both attempts drawn in the ARC palette. The report is a scorer-side
artefact: it reads the test outputs of the evaluated split to draw the truth. Whatever the run
directory lacks (no evaluation yet, no metrics) is said in the report instead of failing.
"""

from __future__ import annotations

import html
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.markup import escape
from rich.table import Table

from arcdiff.data.inspect import PALETTE
from arcdiff.data.tasks import Grid, load_tasks
from arcdiff.errors import CheckpointError, DataError
from arcdiff.train.logging import read_metrics

CHECKPOINT_ORDER = ("final", "best", "last")
BUCKETS = 5  # val_loss_b0..b4, b0 = least noise
GRID_PX = 240  # the side, in pixels, an HTML grid of the largest size (30x30) is drawn in


# ---------------------------------------------------------------------------------------------
# reading a run directory


@dataclass(frozen=True)
class SplitEval:
    """One eval/<split>/ folder; either file may be missing."""

    dirname: str
    scores: dict[str, Any] | None
    predictions: dict[str, Any] | None

    @property
    def split(self) -> str:
        settings = (self.scores or {}).get("settings") or {}
        return settings.get("split") or self.dirname


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    evals: list[SplitEval]
    checkpoints: list[str] = field(default_factory=list)  # names present, e.g. ["final", "last"]

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.path.name)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def read_run(run_dir: Path) -> Run:
    """Everything a report shows of a run directory; a missing directory is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    eval_dir = run_dir / "eval"
    ckpt_dir = run_dir / "checkpoints"
    if not any(
        p.exists() for p in (run_dir / "config.json", run_dir / "metrics.jsonl", eval_dir, ckpt_dir)
    ):
        raise CheckpointError(
            f"{run_dir}: not a run directory (no config.json, metrics.jsonl, checkpoints/ or eval/)"
        )
    try:
        metrics = read_metrics(run_dir)
    except orjson.JSONDecodeError as e:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: a line is not valid JSON ({e})") from None
    evals = [
        SplitEval(d.name, _read_json(d / "scores.json"), _read_json(d / "predictions.json"))
        for d in (sorted(eval_dir.iterdir()) if eval_dir.is_dir() else [])
        if d.is_dir()
    ]
    checkpoints = [n for n in CHECKPOINT_ORDER if (ckpt_dir / f"{n}.pt").is_file()]
    return Run(run_dir, _read_json(run_dir / "config.json"), metrics, evals, checkpoints)


def num_params(run: Run) -> int | None:
    """The parameter count a checkpoint records (memory-mapped: the tensors are not read)."""
    if not run.checkpoints:
        return None
    import torch

    path = run.path / "checkpoints" / f"{run.checkpoints[0]}.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    return state.get("num_params") if isinstance(state, dict) else None


def _params_text(run: Run) -> tuple[str, str | None]:
    """The parameter count as text, and a note when the checkpoint cannot be read."""
    try:
        return _num(num_params(run), "{:,}"), None
    except CheckpointError as e:
        return "unreadable", str(e)


# ---------------------------------------------------------------------------------------------
# numbers as text


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if _finite(value) else "—"


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(value) if _finite(value) else "—"


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _mark(pass2: Any) -> str:
    """✓ solved, ◐ partly (some test inputs), ✗ not, ? not scored."""
    if not _finite(pass2):
        return "?"
    return "✓" if pass2 == 1.0 else "◐" if pass2 > 0 else "✗"


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
        ("pass@1", _pct(s.get("pass@1"))),
        ("pass@2", _pct(s.get("pass@2"))),
        ("oracle (truth among candidates)", _pct(s.get("oracle"))),
        ("size accuracy", _pct(s.get("size_accuracy"))),
        ("cell accuracy (size-correct attempt 1)", _pct(s.get("cell_accuracy"))),
        (
            "same-shape tests: cell accuracy vs copy-the-input",
            f"{_pct(s.get('cell_accuracy_same_shape'))} vs "
            f"{_pct(s.get('copy_baseline_same_shape'))}",
        ),
        ("sampling steps", str(st.get("num_steps", "—"))),
        ("augmentations", votes if augs is not None else "—"),
        ("checkpoint", f"{checkpoint}, step {st.get('step', '—')}"),
        ("wall time", f"{_duration(st.get('wall_s'))} on {st.get('device') or '—'}"),
    ]


def _last(metrics: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in reversed(metrics) if _finite(r.get(key))), None)


def training_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, value) lines summing up metrics.jsonl."""
    losses = [r["loss"] for r in metrics if _finite(r.get("loss")) and not r.get("skipped")]
    done = next((r for r in reversed(metrics) if "done" in r), None)
    val = _last(metrics, "val_acc")
    quick = _last(metrics, "quick_pass2")
    minutes = _last(metrics, "minutes")
    speed = [r["examples_per_s"] for r in metrics[-50:] if _finite(r.get("examples_per_s"))]
    steps = max((r["step"] for r in metrics if _finite(r.get("step"))), default=None)
    rows = [
        ("steps", f"{steps}" + (f" (stopped: {done['done']})" if done else " (still running?)")),
        ("skipped steps", str(sum(bool(r.get("skipped")) for r in metrics))),
        ("train loss (mean of last 10)", _num(np.mean(losses[-10:]) if losses else None)),
        (
            "val loss / acc",
            f"{_num(val.get('val_loss'))} / {_pct(val['val_acc'])} at step {val['step']}"
            if val
            else "—",
        ),
        ("training time", _duration(60 * minutes["minutes"]) if minutes else "—"),
        ("examples/s (median, last 50)", _num(np.median(speed) if speed else None, "{:,.1f}")),
    ]
    if quick:
        rows.append(
            (
                "quick eval pass@2 / oracle",
                f"{_pct(quick['quick_pass2'])} / {_pct(quick.get('quick_oracle'))} "
                f"at step {quick['step']}",
            )
        )
    return rows


def _sorted_tasks(scores: dict[str, Any] | None, predictions: dict[str, Any] | None) -> list[str]:
    """Solved tasks first, then partly solved, then the rest, then unscored; by id within."""
    per_task = (scores or {}).get("per_task") or {}
    ids = list(dict.fromkeys([*per_task, *(predictions or {})]))

    def key(task_id: str) -> tuple[int, float, str]:
        pass2 = (per_task.get(task_id) or {}).get("pass2")
        return (0, -pass2, task_id) if _finite(pass2) else (1, 0.0, task_id)

    return sorted(ids, key=key)


# ---------------------------------------------------------------------------------------------
# rich tables for the terminal


def summary_table(scores: dict[str, Any]) -> Table:
    """An evaluation's scores and settings, one line each."""
    st = scores.get("settings") or {}
    table = Table(title=escape(f"scores: {st.get('split', '?')}"), show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in summary_rows(scores):
        style = "bold green" if label == "pass@2" else None
        table.add_row(label, value, style=style)
    return table


def per_task_table(scores: dict[str, Any]) -> Table:
    """One row per scored task, solved ones first."""
    per_task = scores.get("per_task") or {}
    solved = sum(t.get("pass2") == 1.0 for t in per_task.values())
    table = Table(title=f"{solved} of {len(per_task)} task(s) solved")
    for name in ("", "task", "tests", "pass@1", "pass@2", "oracle", "size ok", "cell acc"):
        table.add_column(name, justify="left" if name in ("", "task") else "right")
    for task_id in _sorted_tasks(scores, None):
        t = per_task[task_id]
        mark = _mark(t.get("pass2"))
        table.add_row(
            f"[green]{mark}[/]" if mark == "✓" else mark,
            escape(task_id),
            str(t.get("test_inputs", "—")),
            *(_pct(t.get(k)) for k in ("pass1", "pass2", "oracle", "size_ok", "cell_acc")),
        )
    return table


def compare_table(run_dirs: list[Path]) -> Table:
    """Runs side by side, one column each: config, size, training and every evaluated split."""
    runs = [read_run(Path(d)) for d in run_dirs]
    table = Table(title="runs", show_lines=False)
    table.add_column("", style="bold")
    for run in runs:
        table.add_column(escape(str(run.path)), justify="right")

    def row(label: str, values: Iterable[str]) -> None:
        table.add_row(label, *values)

    row("config", (escape(r.name) for r in runs))
    row("parameters", (_params_text(r)[0] for r in runs))
    training = [dict(training_rows(r.metrics)) if r.metrics else {} for r in runs]
    for label in ("steps", "train loss (mean of last 10)", "val loss / acc"):
        row(label, (escape(t.get(label, "—")) for t in training))
    splits = list(dict.fromkeys(e.split for r in runs for e in r.evals))
    for split in splits:
        table.add_section()
        per_run = [
            next(
                (dict(summary_rows(e.scores)) for e in r.evals if e.split == split and e.scores), {}
            )
            for r in runs
        ]
        table.add_row(f"[cyan]{escape(split)}[/]", *("" for _ in runs))
        for label, key in (
            ("pass@2", "pass@2"),
            ("oracle", "oracle (truth among candidates)"),
            ("size accuracy", "size accuracy"),
            ("cell acc (size-correct)", "cell accuracy (size-correct attempt 1)"),
            ("same shape: cell acc vs copy", "same-shape tests: cell accuracy vs copy-the-input"),
            ("tasks solved", "tasks solved"),
            ("wall time", "wall time"),
        ):
            row(f"  {label}", (escape(p.get(key, "—")) for p in per_run))
    return table


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's object API: no pyplot, no global backend)


def _series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric, skipped steps left out; a re-logged step keeps its last."""
    points = {r["step"]: r[key] for r in metrics if _finite(r.get(key)) and not r.get("skipped")}
    steps = np.array(sorted(points), dtype=np.float64)
    return steps, np.array([points[s] for s in sorted(points)], dtype=np.float64)


def smooth(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    alpha = 2.0 / (span + 1)
    out = np.empty_like(values)
    acc = weight = 0.0
    for i, v in enumerate(values):
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


def _figure() -> tuple[Any, Any]:
    """A 640x340 figure with one axes over training steps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("step")
    return fig, ax


def _plot_losses(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    fig, ax = _figure()
    drawn = []
    for key, colour in (("loss", "#1f4e79"), ("colour_loss", "#2e8b57"), ("size_loss", "#c0504d")):
        steps, values = _series(metrics, key)
        if not len(steps):
            continue
        span = int(np.clip(len(values) // 40, 1, 500))
        ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        ax.plot(steps, smooth(values, span), color=colour, linewidth=1.6, label=key)
        drawn.append(values)
    if not drawn:
        return False
    skipped = [r["step"] for r in metrics if r.get("skipped")]
    for i, step in enumerate(skipped):
        ax.axvline(step, color="red", alpha=0.4, linewidth=0.8, label="skipped" if not i else None)
    low, high = min(v.min() for v in drawn), max(v.max() for v in drawn)
    if low > 0 and high / low > 4:  # a loss that falls far reads better on a log scale
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    ax.set_title("training loss (faint: raw, solid: smoothed)")
    ax.legend(frameon=False)
    fig.savefig(path)
    return True


def _minor_log_label(y: float, _: Any) -> str:
    """Minor ticks of a log axis: label 2, 3 and 5 times a power of ten, no others."""
    mantissa = round(y / 10 ** math.floor(math.log10(y))) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def _plot_lr(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    steps, values = _series(metrics, "lr")
    if not len(steps):
        return False
    fig, ax = _figure()
    ax.plot(steps, values, color="#1f4e79", linewidth=1.6)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title("learning rate")
    fig.savefig(path)
    return True


def _plot_validation(what: str) -> Callable[[Sequence[dict[str, Any]], Path], bool]:
    """A plot of val_<what> per noise bucket (b0 = least noise) and over all buckets."""

    def plot(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
        steps, values = _series(metrics, f"val_{what}")
        if not len(steps):
            return False
        from matplotlib import colormaps

        fig, ax = _figure()
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, BUCKETS))
        for b in range(BUCKETS):
            b_steps, b_values = _series(metrics, f"val_{what}_b{b}")
            if len(b_steps):
                label = f"b{b}" + {0: " (least noise)", BUCKETS - 1: " (most noise)"}.get(b, "")
                marker = "o" if len(b_steps) <= 60 else None
                ax.plot(
                    b_steps, b_values, color=colours[b], marker=marker, markersize=3, label=label
                )
        ax.plot(steps, values, color="black", linestyle="--", linewidth=1.4, label="all")
        if what == "acc":
            ax.yaxis.set_major_formatter(_percent())
        name = "loss" if what == "loss" else "cell accuracy"
        ax.set_title(f"validation {name} by noise level")
        fig.legend(frameon=False, fontsize=8, loc="outside right upper")
        fig.savefig(path)
        return True

    return plot


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def _plot_quick(metrics: Sequence[dict[str, Any]], path: Path) -> bool:
    steps, values = _series(metrics, "quick_pass2")
    if not len(steps):
        return False
    fig, ax = _figure()
    marker = "o" if len(steps) <= 60 else None
    ax.plot(steps, values, color="#1f4e79", marker=marker, markersize=3, label="pass@2")
    steps, values = _series(metrics, "quick_oracle")
    if len(steps):
        ax.plot(steps, values, color="#c0504d", marker=marker, markersize=3, label="oracle")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_title("quick evaluation during training (no vote)")
    ax.legend(frameon=False)
    fig.savefig(path)
    return True


CURVES = (
    ("loss.png", "training loss", _plot_losses),
    ("lr.png", "learning rate", _plot_lr),
    ("val_acc.png", "validation cell accuracy by noise level", _plot_validation("acc")),
    ("val_loss.png", "validation loss by noise level", _plot_validation("loss")),
    ("quick_eval.png", "quick evaluation", _plot_quick),
)


_PALETTE_RGB = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], np.uint8)
_LINE_RGB = np.array([85, 85, 85], np.uint8)


def grid_image(grid: Grid, px: int = 120) -> np.ndarray:
    """A grid as an RGB image (about px wide) of palette cells with 1-pixel lines between."""
    h, w = grid.shape
    k = max(3, px // max(h, w))  # pixels per cell, the line included
    image = np.repeat(np.repeat(_PALETTE_RGB[grid], k, axis=0), k, axis=1)  # (h*k, w*k, 3)
    image[::k] = _LINE_RGB
    image[:, ::k] = _LINE_RGB
    return np.pad(image, ((0, 1), (0, 1), (0, 0)), constant_values=_LINE_RGB[0])


TILE_PX, LABEL_PX, GAP_PX = 150, 18, 14  # a panel PNG: one tile per grid, a label above each


def _panel_png(path: Path, tests: Sequence[_TestView]) -> None:
    """One PNG per task: a row per test input of input, truth, attempt 1, attempt 2.

    The grids are composed into one image in numpy and drawn on a single axes: a figure of
    axes per grid costs ten times as long in matplotlib.
    """
    from matplotlib.figure import Figure

    row_px = LABEL_PX + TILE_PX + GAP_PX
    width, height = 4 * TILE_PX + 5 * GAP_PX, len(tests) * row_px + GAP_PX
    canvas = np.full((height, width, 3), 255, np.uint8)
    labels = []
    for r, test in enumerate(tests):
        top = GAP_PX + r * row_px + LABEL_PX
        for c, (title, grid, ok) in enumerate(test.columns()):
            left = GAP_PX + c * (TILE_PX + GAP_PX)
            if grid is None:
                text = f"{title}: none"
            else:
                image = grid_image(grid, TILE_PX - 1)
                canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
                text = f"{title} {grid.shape[0]}x{grid.shape[1]}"
            text += {True: " ✓", False: " ✗", None: ""}[ok]
            colour = {True: "#1a7f37", False: "#b42318", None: "#333333"}[ok]
            labels.append((left, top - 4, text, colour))
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, colour in labels:
        ax.text(x, y, text, fontsize=8, color=colour, va="bottom", ha="left")
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------
# per-task views


def _as_grid(value: Any) -> Grid | None:
    return None if value is None else np.asarray(value, dtype=np.uint8)


def _same(a: Grid | None, b: Grid | None) -> bool | None:
    if a is None or b is None:
        return None
    return a.shape == b.shape and bool((a == b).all())


@dataclass(frozen=True)
class _TestView:
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
            *((f"attempt {i + 1}", a, _same(a, self.truth)) for i, a in enumerate(self.attempts)),
        ]


def _test_views(
    task_id: str, predictions: dict[str, Any] | None, truths: dict[str, Any]
) -> list[_TestView]:
    preds = (predictions or {}).get(task_id) or []
    inputs, outputs = truths.get(task_id, ((), ()))
    views = []
    for i in range(max(len(preds), len(inputs))):
        pred = preds[i] if i < len(preds) else {}
        attempts = (_as_grid(pred.get("attempt_1")), _as_grid(pred.get("attempt_2")))
        candidates = pred.get("candidates") or []
        # a candidate's grid is JSON as written by score.predictions_json: compare as JSON
        votes_of = {orjson.dumps(c.get("grid")): c.get("votes") for c in reversed(candidates)}
        votes = tuple(
            None if a is None else votes_of.get(orjson.dumps(a.tolist())) for a in attempts
        )
        views.append(
            _TestView(
                input=inputs[i] if i < len(inputs) else None,
                truth=outputs[i] if i < len(outputs) else None,
                attempts=attempts,
                votes=(votes[0], votes[1]),
                total_votes=sum(c.get("votes") or 0 for c in candidates),
            )
        )
    return views


def _load_truths(split: str, task_ids: list[str]) -> tuple[dict[str, Any], str | None]:
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


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class _SplitReport:
    eval: SplitEval
    task_ids: list[str]
    views: dict[str, list[_TestView]]
    notes: list[str]


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/{report.md, report.html} and their PNGs; returns the HTML path.

    A missing run directory is a CheckpointError; anything missing inside it (evaluation,
    metrics, config) is noted in the report.
    """
    run = read_run(Path(run_dir))
    out = run.path / "report"
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
        split_notes = []
        if ev.scores is None:
            split_notes.append(f"eval/{ev.dirname}/scores.json is missing")
        if ev.predictions is None:
            split_notes.append(f"eval/{ev.dirname}/predictions.json is missing: no attempts")
        task_ids = _sorted_tasks(ev.scores, ev.predictions)
        truths, note = _load_truths(ev.split, task_ids)
        if note:
            split_notes.append(note)
        views = {t: _test_views(t, ev.predictions, truths) for t in task_ids}
        panel_dir = tasks_dir / ev.dirname
        panel_dir.mkdir(parents=True, exist_ok=True)
        for task_id, task_views in views.items():
            if task_views:
                _panel_png(panel_dir / f"{task_id}.png", task_views)
        splits.append(_SplitReport(ev, task_ids, views, split_notes))

    params, note = _params_text(run)
    if note:
        notes.append(f"parameters unknown: {note}")
    generated = time.strftime("%Y-%m-%d %H:%M")
    markdown = _markdown(run, params, notes, curves, splits, generated)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(_html(run, params, notes, curves, splits, generated), encoding="utf-8")
    return html_path


def _per_task_scores(split: _SplitReport, task_id: str) -> dict[str, Any]:
    return ((split.eval.scores or {}).get("per_task") or {}).get(task_id) or {}


def _task_line(t: dict[str, Any]) -> str:
    return (
        f"pass@1 {_pct(t.get('pass1'))} · pass@2 {_pct(t.get('pass2'))} · "
        f"oracle {_pct(t.get('oracle'))} · size {_pct(t.get('size_ok'))} · "
        f"cell acc {_pct(t.get('cell_acc'))}"
    )


def _score_columns(splits: Sequence[_SplitReport]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Column headers (splits) and (label, values) rows of the scores table."""
    scored = [s for s in splits if s.eval.scores]
    rows = [summary_rows(s.eval.scores or {}) for s in scored]
    labels = [label for label, _ in rows[0]] if rows else []
    return [s.eval.split for s in scored], [
        (label, [r[i][1] for r in rows]) for i, label in enumerate(labels)
    ]


def _markdown(
    run: Run,
    params: str,
    notes: list[str],
    curves: list[tuple[str, str]],
    splits: list[_SplitReport],
    generated: str,
) -> str:
    lines = [f"# Report: {run.name}", "", f"Run directory `{run.path}`, generated {generated}.", ""]
    lines += [f"> **Note:** {n}" for n in notes] + ([""] if notes else [])

    lines += ["## Scores", ""]
    headers, rows = _score_columns(splits)
    if headers:
        lines += ["| | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
        lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    else:
        lines.append("No scores yet.")
    lines.append("")

    lines += ["## Training", ""]
    if run.metrics:
        facts = training_rows(run.metrics)
        facts.insert(0, ("parameters", params))
        lines += ["| | |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in facts] + [""]
        lines += [f"![{title}]({filename})" for filename, title in curves] + [""]
    else:
        lines += ["No metrics yet.", ""]

    lines += ["## Config", ""]
    if run.config is not None:
        text = orjson.dumps(run.config, option=orjson.OPT_INDENT_2).decode()
        lines += ["<details><summary>resolved config</summary>", "", "```json", text, "```"]
        lines += ["", "</details>", ""]
    else:
        lines += ["No config.json.", ""]

    for split in splits:
        lines += [f"## Tasks: {split.eval.split}", ""]
        lines += [f"> **Note:** {n}" for n in split.notes] + ([""] if split.notes else [])
        solved = [t for t in split.task_ids if _per_task_scores(split, t).get("pass2") == 1.0]
        listed = ", ".join(f"`{t}`" for t in solved) or "none"
        lines += [f"Solved ({len(solved)} of {len(split.task_ids)}): {listed}", ""]
        for task_id in split.task_ids:
            t = _per_task_scores(split, task_id)
            lines += [f"### {_mark(t.get('pass2'))} `{task_id}`", "", _task_line(t), ""]
            if split.views[task_id]:
                image = f"tasks/{split.eval.dirname}/{task_id}.png"
                lines += [f"![{task_id}: input, truth, attempt 1, attempt 2]({image})", ""]
    return "\n".join(lines)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
  background:#f6f8fa;margin:0}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 12px;
  border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:0 0 12px}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
.note{background:#fff8c5;border:1px solid #d4a72c66;border-radius:6px;padding:6px 10px;margin:6px 0}
table.kv{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;border-radius:6px}
table.kv th,table.kv td{padding:5px 14px;border-bottom:1px solid #eaeef2;text-align:right}
table.kv th:first-child,table.kv td:first-child{text-align:left;color:#424a53}
table.kv thead th{background:#f0f3f6}
tr.hl td{font-weight:600}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px;
  margin-top:14px}
.curves img{width:100%;background:#fff;border:1px solid #d0d7de;border-radius:6px}
details{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
summary{cursor:pointer;font-weight:600}
pre{font-size:12px;overflow:auto}
.legend{display:flex;gap:10px;flex-wrap:wrap;color:#57606a;margin:6px 0 12px}
.legend span{display:inline-flex;align-items:center;gap:4px}
.legend b{width:14px;height:14px;display:inline-block;border:1px solid #999}
.task{background:#fff;border:1px solid #d0d7de;border-left:5px solid #d0d7de;border-radius:6px;
  padding:10px 14px;margin:12px 0}
.task.solved{border-left-color:#1a7f37}.task.partial{border-left-color:#bf8700}
.task.unsolved{border-left-color:#cf222e}
.task h3{margin:0 0 8px;font-size:15px}.task h3 small{font-weight:400;color:#57606a;margin-left:8px}
.mark{display:inline-block;width:1.3em}
.solved .mark{color:#1a7f37}.partial .mark{color:#bf8700}.unsolved .mark{color:#cf222e}
.test{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start;margin:6px 0 10px}
.test .label{writing-mode:vertical-rl;transform:rotate(180deg);color:#57606a;font-size:12px}
figure{margin:0}figcaption{font-size:12px;color:#57606a;margin-top:3px}
figcaption.ok{color:#1a7f37;font-weight:600}figcaption.bad{color:#cf222e}
.grid{display:grid;gap:1px;background:#555;border:1px solid #555;width:max-content}
.grid i{display:block}
.missing{width:60px;height:60px;display:flex;align-items:center;justify-content:center;
  color:#8c959f;border:1px dashed #d0d7de;font-size:12px}
""" + "".join(f".c{c}{{background:{colour}}}" for c, colour in enumerate(PALETTE))

_CELLS = tuple(f"<i class=c{c}></i>" for c in range(len(PALETTE)))


def _cell_px(views: Sequence[_TestView]) -> int:
    """One cell size for every grid of a task, so sizes compare; a 30x30 grid fits GRID_PX."""
    sides = [max(g.shape) for v in views for _, g, _ in v.columns() if g is not None]
    return int(np.clip(GRID_PX // max(sides, default=1), 4, 16))


def _html_grid(grid: Grid | None, cell: int, title: str, ok: bool | None, note: str = "") -> str:
    if grid is None:
        return f'<figure><div class="missing">none</div><figcaption>{title}</figcaption></figure>'
    h, w = grid.shape
    cells = "".join(map(_CELLS.__getitem__, grid.ravel().tolist()))
    style = f"grid-template-columns:repeat({w},{cell}px);grid-auto-rows:{cell}px"
    verdict = {True: " ✓", False: " ✗", None: ""}[ok]
    klass = {True: ' class="ok"', False: ' class="bad"', None: ""}[ok]
    caption = f"{title} · {h}x{w}{note}{verdict}"
    return (
        f'<figure><div class="grid" data-shape="{h}x{w}" style="{style}">{cells}</div>'
        f"<figcaption{klass}>{caption}</figcaption></figure>"
    )


def _html_kv(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=hl' if label == 'pass@2' else ''}><td>{e(label)}</td>"
        + "".join(f"<td>{e(v)}</td>" for v in values)
        + "</tr>"
        for label, values in rows
    )
    thead = f"<thead><tr><th></th>{head}</tr></thead>" if headers else ""
    return f'<table class="kv">{thead}<tbody>{body}</tbody></table>'


def _html_task(split: _SplitReport, task_id: str) -> str:
    e = html.escape
    t = _per_task_scores(split, task_id)
    mark = _mark(t.get("pass2"))
    state = {"✓": "solved", "◐": "partial", "✗": "unsolved", "?": "unscored"}[mark]
    parts = [
        f'<section class="task {state}" id="{e(split.eval.dirname)}-{e(task_id)}">',
        f'<h3><span class="mark">{mark}</span>{e(task_id)}<small>{e(_task_line(t))}</small></h3>',
    ]
    views = split.views[task_id]
    cell = _cell_px(views)
    for i, view in enumerate(views):
        figures = [
            _html_grid(view.input, cell, "input", None),
            _html_grid(view.truth, cell, "truth", None),
        ]
        for k, attempt in enumerate(view.attempts):
            votes = view.votes[k]
            note = f" · {votes}/{view.total_votes} votes" if votes is not None else ""
            if k == 1 and attempt is not None and _same(attempt, view.attempts[0]):
                note += " (same as attempt 1)"
            ok = _same(attempt, view.truth)
            figures.append(_html_grid(attempt, cell, f"attempt {k + 1}", ok, note))
        label = f'<span class="label">test {i + 1}</span>' if len(views) > 1 else ""
        parts.append(f'<div class="test">{label}{"".join(figures)}</div>')
    if not views:
        parts.append('<p class="meta">nothing to draw for this task</p>')
    parts.append("</section>")
    return "".join(parts)


def _html(
    run: Run,
    params: str,
    notes: list[str],
    curves: list[tuple[str, str]],
    splits: list[_SplitReport],
    generated: str,
) -> str:
    e = html.escape
    nav = ['<a href="#scores">scores</a>', '<a href="#training">training</a>']
    nav += ['<a href="#config">config</a>']
    nav += [f'<a href="#tasks-{e(s.eval.dirname)}">tasks: {e(s.eval.split)}</a>' for s in splits]
    body = [
        f"<h1>{e(run.name)}</h1>",
        f'<p class="meta">run directory <code>{e(str(run.path))}</code> · generated {generated}'
        + (f" · checkpoints: {e(', '.join(run.checkpoints))}" if run.checkpoints else "")
        + "</p>",
        f"<nav>{''.join(nav)}</nav>",
        *(f'<p class="note">{e(n)}</p>' for n in notes),
        '<h2 id="scores">Scores</h2>',
    ]
    headers, rows = _score_columns(splits)
    body.append(_html_kv(headers, rows) if headers else '<p class="meta">No scores yet.</p>')

    body.append('<h2 id="training">Training</h2>')
    if run.metrics:
        facts = training_rows(run.metrics)
        facts.insert(0, ("parameters", params))
        body.append(_html_kv([], [(k, [v]) for k, v in facts]))
        images = "".join(f'<img src="{f}" alt="{e(title)}">' for f, title in curves)
        body.append(f'<div class="curves">{images}</div>')
    else:
        body.append('<p class="meta">No metrics yet.</p>')

    body.append('<h2 id="config">Config</h2>')
    if run.config is not None:
        text = orjson.dumps(run.config, option=orjson.OPT_INDENT_2).decode()
        body.append(
            f"<details><summary>resolved config: {e(run.name)}</summary><pre>{e(text)}</pre>"
            "</details>"
        )
    else:
        body.append('<p class="meta">No config.json.</p>')

    legend = "".join(
        f'<span><b style="background:{colour}"></b>{c}</span>' for c, colour in enumerate(PALETTE)
    )
    for split in splits:
        body.append(f'<h2 id="tasks-{e(split.eval.dirname)}">Tasks: {e(split.eval.split)}</h2>')
        body += [f'<p class="note">{e(n)}</p>' for n in split.notes]
        solved = [t for t in split.task_ids if _per_task_scores(split, t).get("pass2") == 1.0]
        links = ", ".join(f'<a href="#{e(split.eval.dirname)}-{e(t)}">{e(t)}</a>' for t in solved)
        body.append(
            f"<p>Solved <b>{len(solved)}</b> of {len(split.task_ids)}: {links or 'none'}. "
            "Solved tasks come first.</p>"
        )
        body.append(f'<div class="legend">colours: {legend}</div>')
        body += [_html_task(split, t) for t in split.task_ids]

    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(run.name)}: arcdiff report</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
