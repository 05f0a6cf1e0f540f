"""scripts/subset_scores.py: a row over a set of tasks from the scorer's per-task scores."""

import pytest

from tests.conftest import load_script


def test_a_row_averages_over_the_named_tasks_and_counts_unscored_ones_as_unsolved():
    task = {"pass2": 1.0, "oracle": 1.0, "size_ok": 1.0, "cell_acc": 1.0, "test_inputs": 2}
    half = {"pass2": 0.5, "oracle": 0.5, "size_ok": 1.0, "cell_acc": 0.8, "test_inputs": 2}
    wrong = {"pass2": 0.0, "oracle": 0.0, "size_ok": 0.0, "cell_acc": None, "test_inputs": 1}
    scores = {"per_task": {"a": task, "b": half, "c": wrong, "other": task}}
    scores["settings"] = {"wall_s": 12.0, "step": 7}
    row = load_script("subset_scores").subset_row(scores, ["a", "b", "c", "missing"])
    assert row["pass@2"] == pytest.approx(1.5 / 4) and row["oracle"] == pytest.approx(1.5 / 4)
    assert row["size"] == pytest.approx(2 / 4) and row["cells"] == pytest.approx(0.9)
    assert (row["tasks_solved"], row["inputs_solved"], row["scored"]) == (1, 3, 3)
    assert (row["seconds"], row["step"]) == (12.0, 7)
