import orjson
import pytest

from arcdiff.cli import app
from arcdiff.data.tasks import load_tasks
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
    # submission.json, rescored against the truth, gives scores.json's per-task pass@2
    truth = load_tasks("aa1:train", ids=SMALL_TASKS).solutions
    for task_id, entries in submission.items():
        assert [(e["attempt_1"], e["attempt_2"]) for e in entries] == [
            (p["attempt_1"], p["attempt_2"]) for p in predictions[task_id]
        ]
        solved = [
            t.tolist() in (e["attempt_1"], e["attempt_2"])
            for e, t in zip(entries, truth[task_id], strict=True)
        ]
        assert scores["per_task"][task_id]["pass2"] == sum(solved) / len(solved)
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
    # named by the checkpoint and by the settings that differ from the run's config
    tagged = out / "eval" / "aa1_train@best~steps2-nomaj-limit2-noema"
    assert {p.name for p in (out / "eval").iterdir()} == {"aa1_train", tagged.name}
    scores = orjson.loads((tagged / "scores.json").read_bytes())
    settings = scores["settings"]
    assert (settings["maj"], settings["num_augs"], settings["checkpoint"]) == (False, 1, "best")
    assert settings["use_ema"] is False and scores["summary"]["tasks"] == 2
    assert SMALL_TASKS[0] in result.stdout  # the per-task table


def test_a_hidden_kaggle_split_is_predicted_to_a_submission(runner, pipeline_run, tmp_path):
    """Test outputs hidden (a challenges file without solutions): nothing is scored, and the
    submission is the one the same settings give where the outputs are known."""
    out, _ = pipeline_run
    tasks = load_tasks("aa1:train", ids=SMALL_TASKS)
    challenges = {
        t.id: {
            "train": [{"input": p.input.tolist(), "output": p.output.tolist()} for p in t.demos],
            "test": [{"input": i.tolist()} for i in t.test_inputs],
        }
        for t in tasks
    }
    path = tmp_path / "hidden_challenges.json"
    path.write_bytes(orjson.dumps(challenges))
    options = ["--num-steps", "2", "--no-maj", "--checkpoint", "last"]
    for split in (str(path), "aa1:train"):
        result = runner.invoke(app, ["evaluate", "--run", str(out), "--split", split, *options])
        assert result.exit_code == 0, result.output
    hidden = out / "eval" / "hidden_challenges.json@last~steps2-nomaj"
    summary = orjson.loads((hidden / "scores.json").read_bytes())["summary"]
    assert summary["tasks"] == len(SMALL_TASKS) and summary["tasks_scored"] == 0
    assert summary["pass@2"] is None
    submission = orjson.loads((hidden / "submission.json").read_bytes())
    assert [len(submission[t.id]) for t in tasks] == [len(t.test_inputs) for t in tasks]
    known = out / "eval" / "aa1_train@last~steps2-nomaj" / "submission.json"
    known = orjson.loads(known.read_bytes())
    assert submission == known


def test_evaluate_without_run_takes_the_most_recent(runner, pipeline_run, monkeypatch):
    out, _ = pipeline_run
    monkeypatch.chdir(out.parent.parent)
    (out.parent.parent / "outputs").mkdir(exist_ok=True)
    (out.parent.parent / "outputs" / "run").symlink_to(out)
    result = runner.invoke(app, ["evaluate", "--num-steps", "2", "--limit", "1", "--no-maj"])
    assert result.exit_code == 0, result.output
    assert "evaluating the most recent run" in result.stdout


def test_report_compares_runs_and_saves_the_comparison(runner, pipeline_run, tmp_path):
    out, _ = pipeline_run
    where = tmp_path / "compared"
    result = runner.invoke(app, ["report", str(out), str(out), "--out", str(where)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout and "pass@2" in result.stdout
    saved = orjson.loads((where / "comparison.json").read_bytes())
    assert saved["runs"] == [str(out), str(out)]
    scores = orjson.loads((out / "eval" / "aa1_train" / "scores.json").read_bytes())
    pass2 = f"{100 * scores['summary']['pass@2']:.1f}%"
    split = next(s for s in saved["sections"] if s["title"] == "aa1:train")
    assert split["rows"]["pass@2"] == [pass2, pass2]
    assert f"| pass@2 | {pass2} | {pass2} |" in (where / "comparison.md").read_text()
    assert pass2 in (where / "comparison.html").read_text()


def test_report_out_writes_one_runs_report_elsewhere(runner, pipeline_run, tmp_path):
    out, _ = pipeline_run
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "mine")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine" / "report.html").is_file()
    assert (tmp_path / "mine" / "report.md").is_file()


def test_config_show_reads_a_run(runner, pipeline_run):
    out, _ = pipeline_run
    result = runner.invoke(app, ["config", "show", "--run", str(out)])
    assert result.exit_code == 0, result.output
    assert "d_model = 32" in result.stdout and 'split = "aa1:train"' in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--checkpoint", "newest"], ("no checkpoints/newest.pt", "(has: best, final, last)")),
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
    assert not (tmp_path / "x").exists()  # refused before anything is written


def eval_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_quick_evaluation_never_replaces_the_run_scores(runner, pipeline_run):
    out, _ = pipeline_run
    before = eval_files(out / "eval" / "aa1_train")
    quick = ["evaluate", "--run", str(out), "--limit", "1", "--num-steps", "1"]
    result = runner.invoke(app, quick)
    assert result.exit_code == 0, result.output
    assert eval_files(out / "eval" / "aa1_train") == before
    scores = orjson.loads((out / "eval" / "aa1_train~steps1-limit1" / "scores.json").read_bytes())
    assert (
        scores["summary"]["tasks"] == 1
        and scores["settings"]["folder"] == "aa1_train~steps1-limit1"
    )
    # without a terminal, each phase prints a line
    assert "sampling 1 tasks of aa1:train" in result.stdout and "sampled in" in result.stdout


def test_scores_made_with_other_settings_are_replaced_only_with_force(
    runner, pipeline_run, tmp_path
):
    out, _ = pipeline_run
    folder = out / "eval" / "aa1_train~steps2"
    args = ["evaluate", "--run", str(out), "--num-steps", "2", "--limit", "1"]
    assert runner.invoke(app, [*args[:-2]]).exit_code == 0  # all tasks: eval/aa1_train~steps2
    before = eval_files(folder)
    # the same folder, asked for by another config (eval.limit=1 in the run's config, say)
    scores = orjson.loads(before["scores.json"])
    scores["settings"]["limit"] = 1
    (folder / "scores.json").write_bytes(orjson.dumps(scores))
    refused = runner.invoke(app, args[:-2])
    assert "holds scores made with limit=1 (now None); pass --force" in one_error_line(refused)
    forced = runner.invoke(app, [*args[:-2], "--force"])
    assert forced.exit_code == 0, forced.output
    assert orjson.loads((folder / "scores.json").read_bytes())["settings"]["limit"] is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["--num-augs", "0"], ("--num-augs 0: eval.num_augs must be >= 1",)),
        (["--limit", "0"], ("--limit 0: eval.limit must be >= 1",)),
        (["--limit", "-1"], ("--limit -1: eval.limit must be >= 1",)),
        (["--num-steps", "0"], ("--num-steps 0: eval.num_steps must be >= 1",)),
        (["--device", "foo"], ("--device 'foo': not a device",)),
        (["--set", "model.d_model=48"], ("--set does not match", "model.d_model: expected 32")),
        (["--set", "eval.num_augs=0"], ("eval.num_augs", "must be >= 1")),
    ],
)
def test_mistyped_evaluate_options_are_one_line(runner, pipeline_run, args, words):
    out, _ = pipeline_run
    before = eval_files(out / "eval" / "aa1_train")
    line = one_error_line(runner.invoke(app, ["evaluate", "--run", str(out), *args]))
    assert all(w in line for w in words), line
    assert eval_files(out / "eval" / "aa1_train") == before


def test_evaluate_a_missing_run_directory_says_so(runner, tmp_path):
    line = one_error_line(runner.invoke(app, ["evaluate", "--run", str(tmp_path / "nope")]))
    assert line.endswith("nope: no such run directory")


def test_a_checkpoint_unlike_its_config_json_is_named(runner, pipeline_run, tmp_path):
    out, _ = pipeline_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints").symlink_to(out / "checkpoints")
    cfg = orjson.loads((out / "config.json").read_bytes())
    cfg["model"]["d_model"] = 256
    (other / "config.json").write_bytes(orjson.dumps(cfg))
    line = one_error_line(runner.invoke(app, ["evaluate", "--run", str(other)]))
    assert "final.pt does not match" in line and "config.json: model.d_model" in line, line
    assert not (other / "eval").exists()


NEW_EVAL_KEYS = (
    "sampler",
    "samples",
    "temperature",
    "remask",
    "ranking",
    "visit_weight",
    "rank_top",
)


def test_a_run_from_before_the_new_rules_evaluates_with_old_and_new_rules(
    runner, pipeline_run, tmp_path
):
    """config.json and the checkpoint without the eval fields added with the confidence
    sampler and the ranking: the plain rule and the new ones both evaluate, each in its own
    folder, and the table and scores.json say which sampler, draws and ranking were used."""
    import shutil

    import torch

    out = tmp_path / "old"
    shutil.copytree(pipeline_run[0], out)
    shutil.rmtree(out / "eval")
    raw = orjson.loads((out / "config.json").read_bytes())
    raw["eval"] = {k: v for k, v in raw["eval"].items() if k not in NEW_EVAL_KEYS}
    (out / "config.json").write_bytes(orjson.dumps(raw))
    path = out / "checkpoints" / "final.pt"
    state = torch.load(path, weights_only=False)
    for key in NEW_EVAL_KEYS:
        del state["config"]["eval"][key]
    torch.save(state, path)

    plain = runner.invoke(app, ["evaluate", "--run", str(out), "--limit", "2"])
    assert plain.exit_code == 0, plain.output
    assert "argmax" in plain.stdout and "vote (count, then confidence)" in plain.stdout
    new_args = ["--sampler", "confidence", "--samples", "2", "--temperature", "1"]
    new = runner.invoke(
        app, ["evaluate", "--run", str(out), "--limit", "2", *new_args, "--ranking", "poe"]
    )
    assert new.exit_code == 0, new.output
    assert "confidence-ordered, temperature 1" in new.stdout and "product of experts" in new.stdout
    assert {p.name for p in (out / "eval").iterdir()} == {
        "aa1_train~limit2",
        "aa1_train~limit2-confidence-samples2-temp1.0-poe",
    }
    scores = orjson.loads(
        (
            out / "eval" / "aa1_train~limit2-confidence-samples2-temp1.0-poe" / "scores.json"
        ).read_bytes()
    )
    settings = scores["settings"]
    assert (settings["sampler"], settings["samples"], settings["ranking"]) == (
        "confidence",
        2,
        "poe",
    )
    predictions = orjson.loads(
        (
            out / "eval" / "aa1_train~limit2-confidence-samples2-temp1.0-poe" / "predictions.json"
        ).read_bytes()
    )
    assert all("score" in c for e in predictions.values() for p in e for c in p["candidates"])


def test_unknown_sampler_or_ranking_is_one_line(runner, pipeline_run):
    for option, value in (("--sampler", "greedy"), ("--ranking", "best"), ("--samples", "0")):
        result = runner.invoke(app, ["evaluate", "--run", str(pipeline_run[0]), option, value])
        assert result.exit_code == 1
        line = one_error_line(result)  # the option, the field, what it must be
        field = f"eval.{option[2:]}"
        assert line.startswith(f"error: {option} {value}: "), line
        assert (
            f"{field}' must be 'argmax'" in line
            or f"{field}' must be 'vote'" in line
            or (f"{field} must be >= 1" in line)
        ), line


def test_options_that_would_change_nothing_are_one_line(runner, pipeline_run):
    """With the argmax sampler (the default) extra draws, a temperature or remasking would
    silently give the evaluation of the defaults again: exit 1 naming the config field."""
    evals = sorted((pipeline_run[0] / "eval").iterdir())
    for args, given, field in (
        (["--samples", "2"], "--samples 2", "eval.samples 2"),
        (["--temperature", "1"], "--temperature 1.0", "eval.temperature 1.0"),
        (["--remask"], "--remask True", "eval.remask true"),
    ):
        result = runner.invoke(app, ["evaluate", "--run", str(pipeline_run[0]), *args])
        assert result.exit_code == 1, result.output
        line = one_error_line(result)  # the option as given, then the field and why
        assert line.startswith(f"error: {given}: {field} needs"), line
    assert sorted((pipeline_run[0] / "eval").iterdir()) == evals  # nothing evaluated


ISSUE14_KEYS = {
    "data": ["self_supervised"],
    "model": ["rope", "abs_pos"],
    "train": ["optimizer", "muon_lr", "cpu_bf16"],
}


def test_a_run_from_before_rope_and_muon_evaluates_the_same_and_resumes(
    runner, pipeline_run, tmp_path
):
    """config.json and every checkpoint without the fields added with rotary positions,
    self-supervised grids, Muon and CPU bf16: the run evaluates to the same submission, bit
    for bit, and training resumes from it (the new fields take their defaults)."""
    import shutil

    import torch

    out = tmp_path / "old"
    shutil.copytree(pipeline_run[0], out)
    shutil.rmtree(out / "eval")
    raw = orjson.loads((out / "config.json").read_bytes())
    for section, keys in ISSUE14_KEYS.items():
        raw[section] = {k: v for k, v in raw[section].items() if k not in keys}
    (out / "config.json").write_bytes(orjson.dumps(raw))
    for path in (out / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=False)
        for section, keys in ISSUE14_KEYS.items():
            for key in keys:
                del state["config"][section][key]
        torch.save(state, path)

    result = runner.invoke(app, ["evaluate", "--run", str(out)])
    assert result.exit_code == 0, result.output
    submission = "eval/aa1_train/submission.json"
    assert (out / submission).read_bytes() == (pipeline_run[0] / submission).read_bytes()

    (out / "checkpoints" / "final.pt").unlink()  # resume picks last.pt
    more = set_args(eval__split="aa1:train", train__max_steps=8)
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress", *more])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output and "8 steps" in resumed.output
