import orjson

from arcdiff.cli import app
from tests.conftest import tiny_overrides
from tests.test_cli import one_error_line


def set_args(**extra):
    return [a for o in tiny_overrides(**extra) for a in ("--set", o)]


def test_train_writes_a_run_directory_and_resumes(runner, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--no-progress", *set_args(train__max_steps=4)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout and "done: 4 steps (max_steps)" in result.stdout
    assert orjson.loads((out / "config.json").read_bytes())["train"]["max_steps"] == 4
    again = runner.invoke(app, args)
    assert "already holds a run; pass --resume" in one_error_line(again)
    longer = [
        "train",
        "--out",
        str(out),
        "--no-progress",
        "--resume",
        *set_args(train__max_steps=6),
    ]
    result = runner.invoke(app, longer)
    assert result.exit_code == 0 and "done: 6 steps" in result.stdout


def test_train_errors_are_one_line(runner, tmp_path):
    out = str(tmp_path / "run")
    typo = runner.invoke(app, ["train", "--out", out, "--set", "train.lrr=1"])
    assert "did you mean 'lr'" in one_error_line(typo)
    missing = runner.invoke(app, ["train", "--out", out, "--resume", *set_args()])
    assert "last.pt: no such checkpoint" in one_error_line(missing)
    bad_source = runner.invoke(
        app, ["train", "--out", out, *set_args(data__train_sources=["nowhere/"])]
    )
    assert "no such file or folder" in one_error_line(bad_source)


def test_without_a_terminal_training_prints_a_line_per_phase(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), *set_args(train__max_steps=4)])
    assert result.exit_code == 0, result.output
    # CliRunner's output is not a terminal: no bar, a line at each validation instead
    assert "train step 3/4: loss" in result.stdout and "train step 4/4: loss" in result.stdout


def test_train_starts_with_a_short_banner_and_the_tree_on_verbose(runner, tmp_path):
    args = ["train", "--no-progress", *set_args(train__max_steps=2)]
    quiet = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert quiet.exit_code == 0, quiet.output
    banner = quiet.stdout.split("\n")
    assert banner[0].startswith("arcdiff: ") and " parameters, 6 tasks (" in banner[0]
    assert banner[1].startswith("budget 2 steps, from step 0; device cpu, ")
    assert banner[2].startswith(f"run dir {tmp_path / 'a'}")
    assert "d_model = 32" not in quiet.stdout  # the tree is in config.json, not on screen
    verbose = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--verbose"])
    assert verbose.exit_code == 0 and "d_model = 32" in verbose.stdout
