"""The same-shape comparison of the model with copying the input, like for like."""

import numpy as np
import pytest

from arcdiff.data.tasks import load_tasks
from arcdiff.eval.score import TestPrediction, score_split
from arcdiff.eval.vote import Candidate


def answer(grid: np.ndarray) -> TestPrediction:
    return TestPrediction((Candidate(grid, 1, 0.5),), grid, grid)


def test_model_and_copy_are_compared_on_the_same_same_shape_test_inputs():
    """Test 0 answered exactly, test 1 with a wrong size: both same-shape numbers are means
    over test 0 alone (copying gets 8/11 of its cells), not the model's over test 0 against
    copying's over tests 0 and 1."""
    tasks = load_tasks("aa1:eval", ids=["9b4c17c4"])  # two same-shape test inputs
    (task,) = tasks
    truths, inputs = tasks.solutions[task.id], task.test_inputs
    assert [t.shape for t in truths] == [i.shape for i in inputs] == [(10, 11), (9, 9)]
    copy0, copy1 = (float((i == t).mean()) for i, t in zip(inputs, truths, strict=True))
    assert copy0 == pytest.approx(8 / 11) and copy1 != pytest.approx(copy0)
    wrong_size = np.zeros((1, 1), dtype=truths[1].dtype)
    predictions = {task.id: [answer(truths[0]), answer(wrong_size)]}
    summary = score_split(predictions, [task], tasks.solutions)["summary"]
    assert summary["size_accuracy"] == 0.5 and summary["test_inputs_same_shape"] == 1
    assert summary["cell_accuracy_same_shape"] == 1.0
    assert summary["copy_baseline_same_shape"] == pytest.approx(copy0)
