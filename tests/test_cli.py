import io
import subprocess
import sys

import numpy as np
import orjson
import pytest
from rich.color import ColorSystem
from rich.console import Console

from arcdiff.cli import app
from arcdiff.config import load_config
from arcdiff.data.inspect import GridDrawing, task_table
from arcdiff.data.tasks import load_tasks
from tests.data.test_tasks import BAD_FIXTURES

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


def test_show_piped_prints_digits_row_by_row(runner):
    # CliRunner's stdout is not a terminal, like `arcdiff data show ... > file`
    result = runner.invoke(app, ["data", "show", "aa1:train/007bbfb7"])
    assert result.exit_code == 0
    assert result.stdout.startswith("task 007bbfb7  (aa1:train)\n\ntrain 0  3x3 -> 9x9\n")
    assert (
        "train 0  3x3 -> 9x9\ninput\n0 7 7\n7 7 7\n0 7 7\n"
        "output\n0 0 0 0 7 7 0 7 7\n0 0 0 7 7 7 7 7 7\n0 0 0 0 7 7 0 7 7\n"
    ) in result.stdout
    assert result.stdout.endswith("test 0  3x3 -> ?\ninput\n7 0 7\n7 0 7\n7 7 0\noutput\n?\n")
    assert "┃" not in result.stdout  # no table: a 30x30 grid would wrap at 80 columns
    # every grid of the task, each row a line
    answers = runner.invoke(app, ["data", "show", "aa1:train/007bbfb7", "--answers"]).stdout
    tasks = load_tasks("aa1:train", ids=["007bbfb7"])
    grids = [g for pair in tasks["007bbfb7"].demos for g in (pair.input, pair.output)]
    grids += [tasks["007bbfb7"].test_inputs[0], tasks.solutions["007bbfb7"][0]]
    for grid in grids:
        assert "\n".join(" ".join(map(str, row)) for row in grid.tolist()) + "\n" in answers
    assert "test 0  3x3 -> 9x9\ninput\n7 0 7\n" in answers
    assert answers.endswith("7 7 0 7 7 0 0 0 0\n")


ALL_COLOURS = np.arange(10, dtype=np.uint8).reshape(1, 10)
COLOUR_SYSTEMS = {"standard": ColorSystem.STANDARD, "truecolor": ColorSystem.TRUECOLOR}


def drawn_cells(color_system: str) -> list[tuple[str, tuple[str, ...]]]:
    """(text, background colour as the terminal gets it: its SGR codes) of each cell drawn."""
    console = Console(file=io.StringIO(), color_system=color_system, force_terminal=True)
    segments = [s for s in console.render(GridDrawing(ALL_COLOURS)) if s.text != "\n"]
    system = COLOUR_SYSTEMS[color_system]
    return [
        (s.text, s.style.bgcolor.downgrade(system).get_ansi_codes(foreground=False))
        for s in segments
    ]


def test_a_16_colour_terminal_draws_the_ten_colours_distinctly():
    cells = drawn_cells("standard")
    assert [text for text, _ in cells] == [f"{c} " for c in range(10)]
    assert len(set(cells)) == 10
    # why the digits: 16 colours make red 2 and orange 7 one colour
    assert cells[2][1] == cells[7][1]


def test_a_truecolor_terminal_draws_blocks():
    cells = drawn_cells("truecolor")
    assert [text for text, _ in cells] == ["  "] * 10
    assert len({bg for _, bg in cells}) == 10


@pytest.mark.parametrize(
    "color_system, row",
    [
        ("standard", "│ train 0    │ 0 7 7  │ 0 0 0 0 7 7 0 7 7  │"),
        ("truecolor", "│ train 0    │        │                    │"),
    ],
)
def test_task_table_draws_digits_where_colours_are_few(color_system, row):
    task = load_tasks("aa1:train", ids=["007bbfb7"])["007bbfb7"]
    console = Console(
        file=io.StringIO(), color_system=color_system, force_terminal=True, width=100, record=True
    )
    console.print(task_table(task))
    assert console.export_text().splitlines()[4] == row


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


def _commands(command, name="arcdiff"):
    yield name, command
    for sub_name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _commands(sub, f"{name} {sub_name}")


def test_every_command_lists_a_whole_sentence():
    """The command list shows each help's first line: one sentence that fits 80 columns."""
    import typer.main

    for name, command in _commands(typer.main.get_command(app)):
        first = (command.help or "").strip().splitlines()[0]
        assert first.endswith(".") and len(first) <= 60, (name, first)


def test_global_help_has_no_completion_installer(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--install-completion" not in result.stdout


def test_progress_bars_name_their_unit():
    from arcdiff.console import progress_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=120)
    for unit, expected in ((None, "3/10 steps"), ("views", "3/10 views")):
        bar = progress_bar("train", console, True, info=False, **({"unit": unit} if unit else {}))
        job = bar.add_task("train", total=10)
        bar.update(job, completed=3)
        console.print(bar.get_renderable())
        assert expected in out.getvalue()
    bar = progress_bar("sample", console, True, info=False, unit="views")
    bar.add_task("per task", total=4, completed=1, unit="tasks")  # a job may count its own
    console.print(bar.get_renderable())
    assert "1/4 tasks" in out.getvalue()


def test_validate_takes_the_task_filters_of_info(runner, tmp_path):
    two = runner.invoke(app, ["data", "validate", "aa1:train", "--ids", "007bbfb7,00d62c1b"])
    assert two.exit_code == 0 and "aa1:train: 2 task(s), every grid valid" in two.stdout
    three = runner.invoke(app, ["data", "validate", "aa1:train", "--limit", "3"])
    assert "3 task(s)" in three.stdout
    small = runner.invoke(app, ["data", "validate", "aa1:train", "--max-size", "3"])
    summary = tmp_path / "info.json"
    info = runner.invoke(app, ["data", "info", "aa1:train", "--max-size", "3", "--json", summary])
    assert small.exit_code == 0 and info.exit_code == 0
    count = orjson.loads(summary.read_bytes())["tasks"]
    assert 0 < count < 400 and f"aa1:train: {count} task(s)" in small.stdout
    missing = runner.invoke(app, ["data", "validate", "aa1:train", "--ids", "nope"])
    assert "no task with id nope" in one_error_line(missing)
