"""Several runs side by side: one set of rows, shown in the terminal and saved as
comparison.{md,html,json} (``arcdiff report RUN RUN ... [--out DIR]``)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from arcdiff.report.html import css, kv_table
from arcdiff.report.read import params_text, read_run
from arcdiff.report.rows import summary_rows, training_rows
from arcdiff.runs.paths import check_writable, write_json

SPLIT_ROWS = (  # (label in the comparison, label in summary_rows)
    ("pass@2", "pass@2"),
    ("oracle", "oracle (truth among candidates)"),
    ("size accuracy", "size accuracy"),
    ("cell acc (size-correct)", "cell accuracy (size-correct attempt 1)"),
    ("same shape: cell acc vs copy", "same-shape tests: cell accuracy vs copy-the-input"),
    ("tasks solved", "tasks solved"),
    ("wall time", "wall time"),
)


@dataclass(frozen=True)
class Comparison:
    """Runs as columns; sections of (label, one value per run) rows. The first section is
    the runs' config and training, then one per evaluated split (titled by the split)."""

    runs: list[str]
    sections: list[tuple[str, list[tuple[str, list[str]]]]]


def compare_runs(run_dirs: list[Path]) -> Comparison:
    """Config, size, training and every evaluated split of each run."""
    runs = [read_run(Path(d)) for d in run_dirs]
    training = [dict(training_rows(r.metrics)) if r.metrics else {} for r in runs]
    head = [("config", [r.name for r in runs]), ("parameters", [params_text(r)[0] for r in runs])]
    head += [
        (label, [t.get(label, "—") for t in training])
        for label in ("steps", "train loss (mean of last 10)", "val loss / acc")
    ]
    sections = [("run", head)]
    for split in dict.fromkeys(e.split for r in runs for e in r.evals):
        per_run = [
            next(
                (dict(summary_rows(e.scores)) for e in r.evals if e.split == split and e.scores), {}
            )
            for r in runs
        ]
        rows = [(label, [p.get(key, "—") for p in per_run]) for label, key in SPLIT_ROWS]
        sections.append((split, rows))
    return Comparison([str(r.path) for r in runs], sections)


def comparison_markdown(c: Comparison) -> str:
    lines = ["# Runs compared", ""]
    for title, rows in c.sections:
        lines += [f"## {title}", "", "| | " + " | ".join(f"`{r}`" for r in c.runs) + " |"]
        lines.append("|---|" + "---:|" * len(c.runs))
        lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
        lines.append("")
    return "\n".join(lines)


def comparison_html(c: Comparison) -> str:
    body = ["<h1>Runs compared</h1>"]
    for title, rows in c.sections:
        body += [f"<h2>{html.escape(title)}</h2>", kv_table(c.runs, rows)]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>arcdiff: runs compared</title><style>\n{css()}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """``out/comparison.{md,html,json}``; returns the HTML path."""
    c = compare_runs(run_dirs)
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "comparison.json",
        {
            "runs": c.runs,
            "sections": [
                {"title": title, "rows": {label: values for label, values in rows}}
                for title, rows in c.sections
            ],
        },
    )
    (out / "comparison.md").write_text(comparison_markdown(c), encoding="utf-8")
    path = out / "comparison.html"
    path.write_text(comparison_html(c), encoding="utf-8")
    return path
