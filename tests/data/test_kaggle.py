"""``arcdiff data kaggle``: a source written as a Kaggle pair reads back as the same tasks."""

from __future__ import annotations

import json

import numpy as np

from arcdiff.cli import app
from arcdiff.data.tasks import load_tasks


def test_a_source_round_trips_through_a_kaggle_pair(runner, tmp_path) -> None:
    result = runner.invoke(app, ["data", "kaggle", "aa1:eval@unseen", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    challenges = tmp_path / "aa1_eval_unseen_challenges.json"
    assert "output" not in json.dumps(json.loads(challenges.read_text())["03560426"]["test"])
    again, source = load_tasks(str(challenges)), load_tasks("aa1:eval@unseen")
    assert again.ids == source.ids and len(again) == 39
    for a, b in zip(again, source, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a.grids(), b.grids(), strict=True))
        assert all(
            np.array_equal(x, y)
            for x, y in zip(again.solutions[a.id], source.solutions[b.id], strict=True)
        )
