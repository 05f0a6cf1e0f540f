"""report.md: scores, training facts and curves, the resolved config, and every task's panel."""

from __future__ import annotations

import orjson

from arcdiff.report.format import mark
from arcdiff.report.rows import task_line, training_rows
from arcdiff.report.views import Report, score_columns


def markdown(report: Report) -> str:
    """The markdown page of a report."""
    run = report.run
    lines = [
        f"# Report: {run.name}",
        "",
        f"Run directory `{run.path}`, generated {report.generated}.",
        "",
    ]
    lines += [f"> **Note:** {n}" for n in report.notes] + ([""] if report.notes else [])

    lines += ["## Scores", ""]
    headers, rows = score_columns(report.splits)
    if headers:
        lines += ["| | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
        lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    else:
        lines.append("No scores yet.")
    lines.append("")

    lines += ["## Training", ""]
    if run.metrics:
        facts = training_rows(run.metrics)
        facts.insert(0, ("parameters", report.params))
        lines += ["| | |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in facts] + [""]
        lines += [f"![{title}]({filename})" for filename, title in report.curves] + [""]
    else:
        lines += ["No metrics yet.", ""]

    lines += ["## Config", ""]
    if run.config is not None:
        text = orjson.dumps(run.config, option=orjson.OPT_INDENT_2).decode()
        lines += ["<details><summary>resolved config</summary>", "", "```json", text, "```"]
        lines += ["", "</details>", ""]
    else:
        lines += ["No config.json.", ""]

    for split in report.splits:
        lines += [f"## Tasks: {split.eval.split}", ""]
        lines += [f"> **Note:** {n}" for n in split.notes] + ([""] if split.notes else [])
        solved = [t for t in split.task_ids if split.task_scores(t).get("pass2") == 1.0]
        listed = ", ".join(f"`{t}`" for t in solved) or "none"
        lines += [f"Solved ({len(solved)} of {len(split.task_ids)}): {listed}", ""]
        for task_id in split.task_ids:
            t = split.task_scores(task_id)
            lines += [f"### {mark(t.get('pass2'))} `{task_id}`", "", task_line(t), ""]
            if split.views[task_id]:
                image = f"tasks/{split.eval.dirname}/{task_id}.png"
                lines += [f"![{task_id}: input, truth, attempt 1, attempt 2]({image})", ""]
    return "\n".join(lines)
