"""The peer benchmark's conversions and scoring on real ARC tasks, without the peer.

The peer's results format is pinned by tests/fixtures/peer/evaluation_maj.json (the shape
evaluate.py --maj writes); the data files are the ones its dataset.py and evaluate.py read."""

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest

from arcdiff.data.tasks import load_tasks
from arcdiff.errors import DataError
from tests.conftest import load_script as load

SCRIPTS = Path(__file__).parents[1] / "scripts"
FIXTURE = Path(__file__).parent / "fixtures" / "peer" / "evaluation_maj.json"


pf = load("peer_format")


@pytest.fixture(scope="module")
def evals():
    return load_tasks("aa1:eval", max_size=10, ids=["00576224", "31d5ba1a", "0becf7df"])


def test_peer_results_become_a_submission_with_every_test_input(evals):
    sub = pf.peer_submission(orjson.loads(FIXTURE.read_bytes()), evals.tasks)
    assert list(sub) == evals.ids
    a = evals["00576224"]
    assert sub["00576224"] == [{"attempt_1": a.test_inputs[0].tolist(), "attempt_2": [[0]]}]
    # 31d5ba1a: the peer wrote test 1 only; test 0 gets [[0]] attempts; 0becf7df is missing
    assert sub["31d5ba1a"][0] == {"attempt_1": [[0]], "attempt_2": [[0]]}
    assert sub["31d5ba1a"][1] == {"attempt_1": [[0, 0], [0, 0]], "attempt_2": [[6, 6], [6, 0]]}
    assert sub["0becf7df"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]


def test_arcdiffs_scorer_scores_the_peers_answers(evals):
    peer = orjson.loads(FIXTURE.read_bytes())
    wrong = pf.score_submission(pf.peer_submission(peer, evals.tasks), evals.tasks, evals.solutions)
    assert wrong["summary"]["pass@2"] == 0.0 and wrong["summary"]["tasks_solved"] == 0
    # the same file with the true output as 31d5ba1a's second attempt of test 1
    truth = evals.solutions["31d5ba1a"][1]
    peer["results"][1]["test_results"][0]["attempt_2"]["predicted_grid"] = truth.tolist()
    scores = pf.score_submission(
        pf.peer_submission(peer, evals.tasks), evals.tasks, evals.solutions
    )
    per_task = scores["per_task"]
    assert per_task["31d5ba1a"]["pass2"] == 0.5 and per_task["31d5ba1a"]["pass1"] == 0.0
    assert scores["summary"]["pass@2"] == pytest.approx(0.5 / 3)
    assert scores["summary"]["oracle"] == scores["summary"]["pass@2"]  # two attempts only
    assert scores["summary"]["tasks_solved"] == 0  # one of two test inputs
    # attempt 1 of 00576224 is the test input (2x2), the truth is 6x6: size wrong
    assert per_task["00576224"]["size_ok"] == 0.0


def test_a_bad_submission_is_one_error_naming_the_task(evals):
    sub = pf.peer_submission(orjson.loads(FIXTURE.read_bytes()), evals.tasks)
    del sub["0becf7df"]
    with pytest.raises(DataError, match="no entry for task 0becf7df"):
        pf.score_submission(sub, evals.tasks, evals.solutions)
    sub = pf.peer_submission(orjson.loads(FIXTURE.read_bytes()), evals.tasks)
    sub["00576224"][0]["attempt_2"] = [[12]]
    with pytest.raises(DataError, match="task 00576224, test 0, attempt_2"):
        pf.score_submission(sub, evals.tasks, evals.solutions)
    with pytest.raises(DataError, match="no 'results'"):
        pf.peer_submission({"metrics": {}}, evals.tasks)


def test_peer_data_holds_no_evaluation_output_until_the_scorer_writes_it(tmp_path, evals):
    """Plant a sentinel as every evaluation test output: the training files must not hold it,
    the solutions file written after training must."""
    sentinel = np.full((7, 3), 9, dtype=np.uint8)
    sentinel[0] = [1, 2, 3]
    planted = dataclasses.replace(
        evals, solutions={t.id: (sentinel,) * len(t.test_inputs) for t in evals}
    )
    train = load_tasks("aa1:train", max_size=10, limit=12)
    counts = pf.write_peer_data(tmp_path, train, planted.tasks, max_size=10)
    root = pf.data_dir(tmp_path)
    needle = orjson.dumps(sentinel.tolist())
    files = sorted(p.name for p in root.iterdir())
    assert files == [pf.EVAL_CHALLENGES, pf.TRAIN_CHALLENGES, pf.TRAIN_SOLUTIONS]
    assert all(needle not in (root / f).read_bytes() for f in files)
    challenges = orjson.loads((root / pf.EVAL_CHALLENGES).read_bytes())
    assert list(challenges) == planted.ids
    for task in planted:
        tests = challenges[task.id]["test"]
        assert [set(t) for t in tests] == [{"input"}] * len(task.test_inputs)
        assert [t["input"] for t in tests] == [i.tolist() for i in task.test_inputs]
        assert len(challenges[task.id]["train"]) == len(task.demos)
    assert counts["eval_tasks"] == 3 and counts["train_tasks"] == 12
    path = pf.write_eval_solutions(tmp_path, planted)
    assert needle in path.read_bytes()
    pf.write_peer_data(tmp_path, train, planted.tasks, max_size=10)  # a rerun removes it again
    assert not path.exists()


def test_training_tasks_keep_their_test_pairs_that_fit(tmp_path):
    train = load_tasks("aa1:train", max_size=10, limit=30)
    big = next(t for t in train if train.solutions[t.id][0] is not None)
    shrunk = dict(train.solutions) | {big.id: (np.zeros((11, 2), np.uint8),)}
    train = dataclasses.replace(train, solutions=shrunk)
    pf.write_peer_data(tmp_path, train, [], max_size=10)
    challenges = orjson.loads((pf.data_dir(tmp_path) / pf.TRAIN_CHALLENGES).read_bytes())
    solutions = orjson.loads((pf.data_dir(tmp_path) / pf.TRAIN_SOLUTIONS).read_bytes())
    assert set(challenges) == set(solutions) == set(train.ids)
    for task in train:
        assert len(challenges[task.id]["test"]) == len(solutions[task.id])
    assert challenges[big.id]["test"] == [] and solutions[big.id] == []
    other = next(t for t in train if t.id != big.id)
    assert solutions[other.id] == [o.tolist() for o in train.solutions[other.id]]


PEER_LOOP = """def train_arc_diffusion(config):
    import json
    # Set up device (prioritize CUDA > MPS > CPU)
    for step_idx in progress_bar:
        batch = next(data_iter)
        losses = trainer.train_step(batch)

        step = trainer.global_step
"""


def test_the_patch_adds_a_budget_a_loss_log_and_a_seed_or_names_the_file():
    patched, diff = pf.patch_training(PEER_LOOP)
    assert "config.get('max_seconds'" in patched and "bench_loss.jsonl" in patched
    assert "torch.manual_seed(config['seed'])" in patched
    assert diff.startswith("--- a/src/training.py") and "+        if _bench_s >=" in diff
    compile(patched, "training.py", "exec")  # still Python
    with pytest.raises(DataError, match="peer/src/training.py: the training loop"):
        pf.patch_training(
            PEER_LOOP.replace("next(data_iter)", "data_iter.next()"), "peer/src/training.py"
        )


def test_the_table_puts_the_ratio_beside_both_systems():
    bench = load("peer_report")
    systems = {
        "arcdiff": {"parameters": 864_802, "steps": 1200, "pass@2": 0.04, "oracle": 0.05},
        "peer": {"parameters": 877_000, "steps": 600, "pass@2": 0.0, "oracle": None},
    }
    _, md = bench.table(systems, "t")
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()}
    assert rows["optimizer steps"] == "| optimizer steps | 1,200 | 600 | 2.00 |"
    assert rows["pass@2"] == "| pass@2 | 4.0% | 0.0% | inf |"
    assert rows["oracle"] == "| oracle | 5.0% | n/a | n/a |"


def test_a_peer_dir_without_the_peer_is_one_error_naming_it(tmp_path):
    setup = load("peer_setup")
    (tmp_path / "checkout" / "experimental").mkdir(parents=True)
    with pytest.raises(DataError, match="checkout: no experimental/diffusion/train_diffusion"):
        setup.copy_peer(tmp_path / "checkout", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_peer_trains_at_the_batch_rate_and_seed_it_is_given(tmp_path):
    """The peer's own recipe (batch 128, lr 5e-4) unless --peer-batch / --peer-lr say otherwise;
    its examples/s counts the batch it trained with."""
    setup, report = load("peer_setup"), load("peer_report")
    own = orjson.loads(setup.peer_config(tmp_path, 140, 10, 125, 900).read_bytes())["training"]
    assert (own["batch_size"], own["learning_rate"], own["seed"]) == (128, 5e-4, 0)
    small = setup.peer_config(tmp_path, 140, 10, 1000, 900, batch=16, lr=2e-3, seed=1)
    training = orjson.loads(small.read_bytes())["training"]
    assert (training["batch_size"], training["learning_rate"], training["seed"]) == (16, 2e-3, 1)
    log = tmp_path / "outputs" / "toiny" / "bench_loss.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"step": 100, "s": 50.0, "loss": 1.0}\n')
    assert report.peer_row(tmp_path, 10.0, batch=16)["examples_per_s"] == 32.0
