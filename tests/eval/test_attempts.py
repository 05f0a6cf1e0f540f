"""Attempt 2 is never a copy of attempt 1: when every view votes for one grid, the views' best
runner-up fills the second slot (eval.distinct_attempts), and the scorer counts the repeats."""

import torch

from arcdiff.config import EvalConfig
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.predict import predict_options, predict_tasks
from arcdiff.eval.score import score_split
from tests.conftest import SMALL_TASKS
from tests.eval.test_samplers import KnownDenoiser


def one_cell_model() -> KnownDenoiser:
    """Certain of a 1x1 grid of colour 0: every dihedral view and colour permutation (0 is
    kept) of it is the same grid, so every view votes for it."""
    return KnownDenoiser(torch.zeros(1, 6, 6, dtype=torch.long), torch.tensor([[1, 1]]))


def predict(distinct: bool):
    tasks = load_tasks("aa1:train", ids=SMALL_TASKS[:1])
    settings = EvalConfig(num_steps=2, num_augs=8, distinct_attempts=distinct)
    options = predict_options(settings) | {"rank": None}
    index = {tasks.ids[0]: 0}
    model = one_cell_model()
    predictions = predict_tasks(model, DiscreteDiffusion(), tasks.tasks, index, **options)
    return predictions, tasks


def test_a_lone_voted_grid_gets_a_different_second_attempt():
    predictions, tasks = predict(distinct=True)
    for pred in (p for ps in predictions.values() for p in ps):
        assert pred.attempt_1.tolist() == [[0]]
        assert pred.attempt_2.shape == (1, 1) and pred.attempt_2.tolist() != [[0]]
        assert [c.votes for c in pred.candidates] == [8, 0]  # the runner-up has no votes
    assert (
        score_split(predictions, tasks.tasks, tasks.solutions)["summary"]["repeated_attempts"] == 0
    )


def test_without_distinct_attempts_the_second_is_a_copy_and_is_counted():
    predictions, tasks = predict(distinct=False)
    preds = [p for ps in predictions.values() for p in ps]
    assert all(p.attempt_2.tolist() == p.attempt_1.tolist() == [[0]] for p in preds)
    summary = score_split(predictions, tasks.tasks, tasks.solutions)["summary"]
    assert summary["repeated_attempts"] == len(preds) >= 1
