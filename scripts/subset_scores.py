"""Scores of evaluations and solves on one set of tasks, one row each (the issue 27 table).

Each argument is a scores.json (a run's ``eval/<split>/``, a ``solve`` folder) or a folder
holding one; ``--tasks`` names the tasks to score over (any source, e.g. aa1:eval@unseen).
The per-task scores the scorer wrote are averaged over those tasks; a task a file did not
score counts as unsolved (it was not answered). Wall seconds come from the file.

    python scripts/subset_scores.py --tasks aa1:eval@unseen RUN/eval/aa1_eval outputs/solve-x
    python scripts/subset_scores.py --tasks aa1:eval@seen --json rows.json RUN/eval/aa1_eval
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arcdiff.data.tasks import load_tasks  # noqa: E402

KEYS = (("pass@2", "pass2"), ("oracle", "oracle"), ("size", "size_ok"), ("cells", "cell_acc"))


def subset_row(scores: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """pass@2, oracle, size accuracy (means over ``ids``), cells right (mean over the tasks
    with a right-size attempt), tasks solved, test inputs solved, and the file's seconds."""
    per_task = scores["per_task"]
    row: dict[str, Any] = {}
    for name, key in KEYS[:3]:
        row[name] = float(np.mean([per_task.get(t, {}).get(key) or 0.0 for t in ids]))
    cells = [
        per_task[t]["cell_acc"] for t in ids if per_task.get(t, {}).get("cell_acc") is not None
    ]
    row["cells"] = float(np.mean(cells)) if cells else None
    row["tasks_solved"] = sum(per_task.get(t, {}).get("pass2") == 1.0 for t in ids)
    row["inputs_solved"] = round(
        sum(per_task[t]["pass2"] * per_task[t]["test_inputs"] for t in ids if t in per_task)
    )
    row["scored"] = sum(t in per_task for t in ids)
    settings, solve = scores.get("settings", {}), scores.get("solve", {})
    row["seconds"] = solve.get("wall_s", settings.get("wall_s"))
    row["step"] = settings.get("step")
    return row


def _path(arg: str) -> Path:
    path = Path(arg)
    return path / "scores.json" if path.is_dir() else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scores", nargs="+", help="scores.json files or folders holding one")
    parser.add_argument("--tasks", required=True, help="the tasks to score over (a source)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    ids = load_tasks(args.tasks).ids
    rows = {}
    print(f"{len(ids)} tasks of {args.tasks}")
    print(f"{'scores':60s} pass@2 oracle  size  cells solved inputs scored   secs")
    for arg in args.scores:
        if not _path(arg).is_file():
            print(f"{arg[-60:]:60s} (no scores.json yet)")
            continue
        row = subset_row(orjson.loads(_path(arg).read_bytes()), ids)
        rows[arg] = row
        cells = "-" if row["cells"] is None else f"{100 * row['cells']:5.1f}"
        secs = "-" if row["seconds"] is None else f"{row['seconds']:6.0f}"
        print(
            f"{arg[-60:]:60s} {100 * row['pass@2']:5.1f}  {100 * row['oracle']:5.1f} "
            f"{100 * row['size']:5.1f}  {cells} {row['tasks_solved']:6d} {row['inputs_solved']:6d}"
            f" {row['scored']:6d} {secs}"
        )
    if args.json:
        args.json.write_bytes(orjson.dumps({"tasks": args.tasks, "rows": rows}))


if __name__ == "__main__":
    main()
