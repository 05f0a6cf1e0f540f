import orjson
import pytest

from arcdiff.cli import app
from tests.conftest import SMALL_TASKS, tiny_overrides
from tests.test_cli import one_error_line


def set_args(**extra):
    return [a for o in tiny_overrides(**extra) for a in ("--set", o)]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """One tiny pipeline run (train -> evaluate on its 6 tasks -> report)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("pipe") / "run"
    args = set_args(eval__split="aa1:train", eval__num_steps=4, eval__num_augs=2)
    result = CliRunner().invoke(app, ["pipeline", "--out", str(out), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return out, result


def test_pipeline_trains_evaluates_and_reports(pipeline_run):
    out, result = pipeline_run
    assert "pass@2" in result.stdout
    scores = orjson.loads((out / "eval" / "aa1_train" / "scores.json").read_bytes())
    assert scores["summary"]["tasks"] == len(SMALL_TASKS)
    assert scores["settings"]["num_augs"] == 2 and scores["settings"]["num_steps"] == 4
    submission = orjson.loads((out / "eval" / "aa1_train" / "submission.json").read_bytes())
    assert sorted(submission) == sorted(SMALL_TASKS)
    assert all(set(entry) == {"attempt_1", "attempt_2"} for e in submission.values() for entry in e)
    predictions = orjson.loads((out / "eval" / "aa1_train" / "predictions.json").read_bytes())
    assert all(len(p["candidates"]) >= 1 for e in predictions.values() for p in e)
    assert (out / "report" / "report.html").exists() and (out / "report" / "report.md").exists()


def test_evaluate_options_and_stats(runner, pipeline_run):
    out, _ = pipeline_run
    final = {p.name: p.read_bytes() for p in (out / "eval" / "aa1_train").iterdir()}
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(out),
            "--no-maj",
            "--num-steps",
            "2",
            "--limit",
            "2",
            "--checkpoint",
            "best",
            "--no-ema",
            "--stats",
        ],
    )
    assert result.exit_code == 0, result.output
    # another checkpoint's scores go beside the final ones, which stay as they were
    assert {p.name: p.read_bytes() for p in (out / "eval" / "aa1_train").iterdir()} == final
    scores = orjson.loads((out / "eval" / "aa1_train@best" / "scores.json").read_bytes())
    settings = scores["settings"]
    assert (settings["maj"], settings["num_augs"], settings["checkpoint"]) == (False, 1, "best")
    assert settings["use_ema"] is False and scores["summary"]["tasks"] == 2
    assert SMALL_TASKS[0] in result.stdout  # the per-task table


def test_evaluate_without_run_takes_the_most_recent(runner, pipeline_run, monkeypatch):
    out, _ = pipeline_run
    monkeypatch.chdir(out.parent.parent)
    (out.parent.parent / "outputs").mkdir(exist_ok=True)
    (out.parent.parent / "outputs" / "run").symlink_to(out)
    result = runner.invoke(app, ["evaluate", "--num-steps", "2", "--limit", "1", "--no-maj"])
    assert result.exit_code == 0, result.output
    assert "evaluating the most recent run" in result.stdout


def test_report_compares_runs(runner, pipeline_run):
    out, _ = pipeline_run
    result = runner.invoke(app, ["report", str(out), str(out)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout and "pass@2" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--checkpoint", "newest"], ("no such checkpoint in", "(has: best, final, last)")),
        (["--num-steps", "500"], ("num_steps=500 must be in 1..num_timesteps=128",)),
        (["--split", "aa2:eval"], ("aa2:eval: no tasks to evaluate",)),
    ],
)
def test_evaluate_errors_are_one_line(runner, pipeline_run, args, words):
    out, _ = pipeline_run
    line = one_error_line(runner.invoke(app, ["evaluate", "--run", str(out), *args]))
    assert all(w in line for w in words)


def test_evaluate_and_pipeline_without_a_run(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no run with checkpoints under outputs" in one_error_line(
        runner.invoke(app, ["evaluate"])
    )
    skip = runner.invoke(app, ["pipeline", "--out", str(tmp_path / "x"), "--skip-training"])
    assert "no trained run to reuse" in one_error_line(skip)
