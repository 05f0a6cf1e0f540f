"""Seeds and intervals on synthetic cases whose answer is known."""

import numpy as np
import pytest

from arcdiff.report.stats import mean_sd, paired_bootstrap, task_matrix

TASKS, SEEDS = 78, 3


def test_mean_and_sample_sd():
    m = mean_sd([0.02, 0.04, 0.06])
    assert m.mean == pytest.approx(0.04) and m.sd == pytest.approx(0.02) and m.n == 3
    assert mean_sd([0.5]).sd == 0.0
    with pytest.raises(ValueError):
        mean_sd([])


def test_a_difference_every_seed_repeats_on_many_tasks_is_significant():
    a = np.zeros((SEEDS, TASKS))
    b = a.copy()
    b[:, :30] = 1.0  # 30 more tasks solved on every seed
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(30 / TASKS)
    assert result.significant and result.low > 0.25 and result.p < 0.001
    assert (result.tasks, result.seeds) == (TASKS, SEEDS)


def test_one_task_on_one_seed_is_not_significant():
    """Two tasks against none out of 78 on one seed (what single-seed rows decided): noise."""
    a = np.zeros((1, TASKS))
    b = a.copy()
    b[0, :2] = 1.0
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(2 / TASKS)
    assert not result.significant and result.low == 0.0 and result.p > 0.05
    one = paired_bootstrap(np.zeros((SEEDS, TASKS)), np.eye(SEEDS, TASKS))
    assert one.diff == pytest.approx(1 / TASKS) and not one.significant


def test_a_symmetric_difference_is_centred_on_zero():
    a = np.zeros((SEEDS, TASKS))
    b = a.copy()
    a[:, :10] = 1.0  # A solves 10 tasks B does not, B 10 others A does not
    b[:, 10:20] = 1.0
    result = paired_bootstrap(a, b)
    assert (
        result.diff == 0.0
        and result.low < 0 < result.high
        and result.p == pytest.approx(1, abs=0.05)
    )
    same = paired_bootstrap(a, a)
    assert (same.diff, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)


def test_unscored_tasks_count_zero_and_shapes_must_match():
    m = task_matrix([{"t1": 1.0}, {"t1": 0.5, "t2": 1.0}], ["t1", "t2"])
    assert m.tolist() == [[1.0, 0.0], [0.5, 1.0]]
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((3, 3)))
