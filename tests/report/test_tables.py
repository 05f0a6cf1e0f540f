import re

import orjson
from rich.console import Console

from arcdiff.report import compare_table, per_task_table, summary_table
from tests.report.conftest import PARTIAL, SOLVED, UNSOLVED, make_run


def _text(renderable) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_compare_table_has_one_column_per_run(tmp_path):
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b", with_eval=False)]
    table = compare_table(runs)
    assert len(table.columns) == 1 + len(runs)
    text = _text(table)
    assert "aa1:eval" in text and "50.0%" in text
    assert "300 (stopped: max_steps)" in text


def test_terminal_tables_show_scores_and_solved_tasks_first(tmp_path):
    scores = orjson.loads((make_run(tmp_path) / "eval/aa1_eval/scores.json").read_bytes())
    summary = _text(summary_table(scores))
    assert re.search(r"pass@2\W+50\.0%", summary)
    assert re.search(r"tasks solved\W+1 / 3", summary)
    assert "8 (majority vote)" in summary
    per_task = _text(per_task_table(scores))
    assert per_task.index(SOLVED) < per_task.index(PARTIAL) < per_task.index(UNSOLVED)
    assert "1 of 3 task(s) solved" in per_task
