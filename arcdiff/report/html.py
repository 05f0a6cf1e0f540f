"""report.html: one self-contained page; grids drawn as CSS cells, styles from report.css."""

from __future__ import annotations

import base64
import functools
import html
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import orjson

from arcdiff.data.inspect import PALETTE
from arcdiff.data.tasks import Grid
from arcdiff.report.format import mark
from arcdiff.report.rows import task_line, training_rows
from arcdiff.report.views import InputView, Report, SplitReport, same, score_columns

GRID_PX = 240  # the side, in pixels, an HTML grid of the largest size (30x30) is drawn in


@functools.cache
def css() -> str:
    """The page's styles: report.css (packaged next to this module) and a class per colour."""
    text = files("arcdiff.report").joinpath("report.css").read_text(encoding="utf-8")
    return text + "".join(f".c{c}{{background:{colour}}}" for c, colour in enumerate(PALETTE))


_CELLS = tuple(f"<i class=c{c}></i>" for c in range(len(PALETTE)))


def _cell_px(views: Sequence[InputView]) -> int:
    """One cell size for every grid of a task, so sizes compare; a 30x30 grid fits GRID_PX."""
    sides = [max(g.shape) for v in views for _, g, _ in v.columns() if g is not None]
    return int(np.clip(GRID_PX // max(sides, default=1), 4, 16))


def _grid(grid: Grid | None, cell: int, title: str, ok: bool | None, note: str = "") -> str:
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


def kv_table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
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


def _task(split: SplitReport, task_id: str) -> str:
    e = html.escape
    t = split.task_scores(task_id)
    symbol = mark(t.get("pass2"))
    state = {"✓": "solved", "◐": "partial", "✗": "unsolved", "?": "unscored"}[symbol]
    parts = [
        f'<section class="task {state}" id="{e(split.eval.dirname)}-{e(task_id)}">',
        f'<h3><span class="mark">{symbol}</span>{e(task_id)}<small>{e(task_line(t))}</small></h3>',
    ]
    views = split.views[task_id]
    cell = _cell_px(views)
    for i, view in enumerate(views):
        figures = [
            _grid(view.input, cell, "input", None),
            _grid(view.truth, cell, "truth", None),
        ]
        for k, attempt in enumerate(view.attempts):
            votes = view.votes[k]
            note = f" · {votes}/{view.total_votes} votes" if votes is not None else ""
            if k == 1 and attempt is not None and same(attempt, view.attempts[0]):
                note += " (same as attempt 1)"
            ok = same(attempt, view.truth)
            figures.append(_grid(attempt, cell, f"attempt {k + 1}", ok, note))
        label = f'<span class="label">test {i + 1}</span>' if len(views) > 1 else ""
        parts.append(f'<div class="test">{label}{"".join(figures)}</div>')
    if not views:
        parts.append('<p class="meta">nothing to draw for this task</p>')
    parts.append("</section>")
    return "".join(parts)


def data_uri(png: Path) -> str:
    """A PNG file as a ``data:`` URI: the page carries its images, so it travels alone."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def page(report: Report, folder: Path) -> str:
    """The HTML page of a report: styles inline, the curves (PNGs in ``folder``) embedded."""
    run = report.run
    e = html.escape
    nav = ['<a href="#scores">scores</a>', '<a href="#training">training</a>']
    nav += ['<a href="#config">config</a>']
    nav += [
        f'<a href="#tasks-{e(s.eval.dirname)}">tasks: {e(s.eval.split)}</a>' for s in report.splits
    ]
    body = [
        f"<h1>{e(run.name)}</h1>",
        f'<p class="meta">run directory <code>{e(str(run.path))}</code>'
        + f" · generated {report.generated}"
        + (f" · checkpoints: {e(', '.join(run.checkpoints))}" if run.checkpoints else "")
        + "</p>",
        f"<nav>{''.join(nav)}</nav>",
        *(f'<p class="note">{e(n)}</p>' for n in report.notes),
        '<h2 id="scores">Scores</h2>',
    ]
    headers, rows = score_columns(report.splits)
    body.append(kv_table(headers, rows) if headers else '<p class="meta">No scores yet.</p>')

    body.append('<h2 id="training">Training</h2>')
    if run.metrics:
        facts = training_rows(run.metrics)
        facts.insert(0, ("parameters", report.params))
        body.append(kv_table([], [(k, [v]) for k, v in facts]))
        images = "".join(
            f'<img src="{data_uri(folder / f)}" alt="{e(title)}">' for f, title in report.curves
        )
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
    for split in report.splits:
        body.append(f'<h2 id="tasks-{e(split.eval.dirname)}">Tasks: {e(split.eval.split)}</h2>')
        body += [f'<p class="note">{e(n)}</p>' for n in split.notes]
        solved = [t for t in split.task_ids if split.task_scores(t).get("pass2") == 1.0]
        links = ", ".join(f'<a href="#{e(split.eval.dirname)}-{e(t)}">{e(t)}</a>' for t in solved)
        body.append(
            f"<p>Solved <b>{len(solved)}</b> of {len(split.task_ids)}: {links or 'none'}. "
            "Solved tasks come first.</p>"
        )
        body.append(f'<div class="legend">colours: {legend}</div>')
        body += [_task(split, t) for t in split.task_ids]

    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(run.name)}: arcdiff report</title><style>\n{css()}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
