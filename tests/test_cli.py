import subprocess
import sys

import orjson
import pytest

from arcdiff.cli import app
from arcdiff.config import load_config
from tests.test_tasks import BAD_FIXTURES

BAD_STEMS = [stem for stem, _, _ in BAD_FIXTURES] + ["malformed_json"]


def one_error_line(result) -> str:
    """The CLI failed with exactly one line on stderr and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("stem", BAD_STEMS)
def test_every_bad_fixture_fails_info_with_one_clear_line(runner, fixtures, stem):
    path = fixtures / "bad" / f"{stem}.json"
    line = one_error_line(runner.invoke(app, ["data", "info", str(path)]))
    assert str(path) in line


@pytest.mark.parametrize("stem", BAD_STEMS)
def test_every_bad_fixture_fails_validate_with_a_table(runner, fixtures, stem, tmp_path):
    path = fixtures / "bad" / f"{stem}.json"
    report = tmp_path / "problems.json"
    result = runner.invoke(app, ["data", "validate", str(path), "--json", str(report)])
    assert "1 problem(s)" in one_error_line(result)
    (problem,) = orjson.loads(report.read_bytes())["problems"]
    assert problem["file"] == str(path)


def test_validate_reports_every_problem_of_a_folder(runner, fixtures, tmp_path):
    report = tmp_path / "problems.json"
    result = runner.invoke(app, ["data", "validate", str(fixtures / "bad"), "--json", str(report)])
    line = one_error_line(result)
    assert f"{len(BAD_STEMS)} problem(s) in {len(BAD_FIXTURES)} task(s)" in line
    problems = orjson.loads(report.read_bytes())["problems"]
    assert {p["file"].rsplit("/", 1)[1][:-5] for p in problems} == set(BAD_STEMS)
    for stem in ("colour_10", "grid_31x31", "ragged_row"):
        assert stem in result.stdout  # the table names each task


def test_validate_ok(runner, fixtures):
    result = runner.invoke(app, ["data", "validate", str(fixtures / "good")])
    assert result.exit_code == 0 and "2 task(s), every grid valid" in result.stdout
    result = runner.invoke(app, ["data", "validate", "aa1:eval"])
    assert result.exit_code == 0 and "400 task(s)" in result.stdout


@pytest.mark.parametrize("source, tasks", [("aa1:eval", 400), ("aa2:eval", 120)])
def test_info_prints_tables_and_json(runner, tmp_path, source, tasks):
    out = tmp_path / "info.json"
    result = runner.invoke(app, ["data", "info", source, "--json", str(out)])
    assert result.exit_code == 0, result.output
    for words in ("tasks", "demonstration pairs", "test inputs", "grid sizes", "colours"):
        assert words in result.stdout
    summary = orjson.loads(out.read_bytes())
    assert summary["tasks"] == tasks and summary["test_outputs_known"] == summary["test_inputs"]
    assert sum(summary["tasks_by_largest_side"].values()) == tasks
    assert len(summary["colour_counts"]) == 10


def test_info_filters_from_options_and_from_config(runner, tmp_path):
    direct, via_config = tmp_path / "a.json", tmp_path / "b.json"
    runner.invoke(app, ["data", "info", "aa1:eval", "--max-size", "10", "--json", str(direct)])
    result = runner.invoke(
        app, ["data", "info", "aa1:eval", "--config", "toiny_aa1", "--json", str(via_config)]
    )
    assert result.exit_code == 0
    a, b = orjson.loads(direct.read_bytes()), orjson.loads(via_config.read_bytes())
    assert a == b and 0 < a["tasks"] < 400 and a["largest_side"] <= 10


def test_show_draws_a_task(runner):
    result = runner.invoke(app, ["data", "show", "aa1:train/007bbfb7"])
    assert result.exit_code == 0
    assert "007bbfb7" in result.stdout and "3x3 -> 9x9" in result.stdout
    assert "3x3 -> ?" in result.stdout  # test outputs are hidden unless asked for
    shown = runner.invoke(app, ["data", "show", "aa1:train/007bbfb7", "--answers"])
    assert "3x3 -> 9x9" in shown.stdout and "-> ?" not in shown.stdout


def test_show_a_task_file_and_bad_references(runner, fixtures):
    result = runner.invoke(app, ["data", "show", str(fixtures / "good" / "mirror_row.json")])
    assert result.exit_code == 0 and "mirror_row" in result.stdout
    assert "no task with id nope" in one_error_line(
        runner.invoke(app, ["data", "show", "aa1:train/nope"])
    )
    assert "expected SOURCE/TASK_ID" in one_error_line(runner.invoke(app, ["data", "show", "aa1"]))


def test_config_show_overrides_and_save(runner, tmp_path):
    saved = tmp_path / "resolved.json"
    result = runner.invoke(
        app,
        ["config", "show", "--config", "toiny_aa1", "--set", "train.lr=3e-4", "--save", str(saved)],
    )
    assert result.exit_code == 0 and "lr = 0.0003" in result.stdout
    assert load_config(saved) == load_config("toiny_aa1", ["train.lr=3e-4"])


@pytest.mark.parametrize(
    "args, words",
    [
        (["config", "show", "--set", "train.lrr=1"], "did you mean 'lr'"),
        (["config", "show", "--config", "nope_aa1"], "neither a file nor a preset"),
        (
            ["data", "info", "aa1:eval", "--set", "data.max_size=40"],
            "data.max_size must be in 1..30",
        ),
        (["data", "info", "nowhere/"], "no such file or folder"),
    ],
)
def test_config_and_source_typos_end_in_one_line(runner, args, words):
    assert words in one_error_line(runner.invoke(app, args))


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "arcdiff", "data", "info", "aa1:train", "--limit", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "aa1:train" in result.stdout
