"""One evaluation-settings path: a field declared once in EvalConfig reaches the command line,
the eval folder's tag, the overwrite guard and scores.json."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
import typer
from typer.testing import CliRunner

from arcdiff.cli import app
from arcdiff.cli.options import eval_options_for, eval_settings
from arcdiff.config import Config, EvalConfig, setting
from arcdiff.errors import ConfigError, OutputError
from arcdiff.eval.evaluate import evaluate_run
from arcdiff.runs.evals import eval_dirname, settings_tag, tagged_fields
from tests.conftest import tiny_overrides


@dataclasses.dataclass(frozen=True)
class WithJitter(EvalConfig):
    """EvalConfig as a developer extends it: one new field, declared once."""

    jitter: float = setting(0.0, "A setting added by this test.", option="--jitter")


def flat(text: str) -> str:
    """A rich help page as one line of words (no box, no wrapping)."""
    return " ".join(text.replace("│", " ").split())


def test_settings_tag_names_what_is_sampled():
    voted = Config().eval  # maj, 8 views
    replace = dataclasses.replace
    assert settings_tag(replace(voted, maj=False, num_augs=4), voted) == "nomaj"
    assert settings_tag(replace(voted, num_augs=4), voted) == "augs4"
    alone = replace(voted, maj=False)
    assert settings_tag(replace(voted, maj=False, num_augs=4), alone) == ""
    assert settings_tag(replace(voted, sampler="confidence", num_steps=4), voted) == (
        "steps4-confidence"
    )
    assert eval_dirname("aa1:eval", "min_15", "steps4") == "aa1_eval@min_15~steps4"


def test_every_setting_that_changes_predictions_is_tagged():
    # only the split (the folder's own name) and the batch size (how rows are grouped) are not
    untagged = {f.name for f in dataclasses.fields(EvalConfig)} - set(tagged_fields(EvalConfig()))
    assert untagged == {"split", "batch_size"}


def test_a_new_field_reaches_the_command_line_and_its_checks():
    seen = {}
    cli = typer.Typer()

    @cli.command()
    @eval_options_for(WithJitter)
    def run(eval_options: dict | None = None) -> None:
        seen["settings"] = eval_settings(WithJitter(), eval_options or {})

    result = CliRunner().invoke(cli, ["--jitter", "0.5", "--num-steps", "4"])
    assert result.exit_code == 0, result.output
    assert seen["settings"] == WithJitter(jitter=0.5, num_steps=4)
    help_text = flat(CliRunner().invoke(cli, ["--help"]).output)
    assert "--jitter" in help_text and "A setting added by this test." in help_text
    with pytest.raises(ConfigError, match=r"--num-steps 0 --jitter 1.0: eval.num_steps"):
        eval_settings(WithJitter(), {"num_steps": 0, "jitter": 1.0})


def test_evaluate_options_are_the_configs_fields(runner):
    help_text = flat(runner.invoke(app, ["evaluate", "--help"]).output)
    for option in ("--num-steps", "--sampler", "--samples", "--ranking", "--rank-top", "--ema"):
        assert option in help_text
    assert "One of: argmax, ancestral, confidence. Default: eval.sampler." in help_text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("evals") / "run"
    args = ["train", "--out", str(run), "--no-progress"]
    for override in tiny_overrides(train__max_steps=2, eval__split="aa1:train"):
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run


def test_a_new_field_reaches_the_folder_tag_the_guard_and_scores_json(tiny_run):
    settings = WithJitter(split="aa1:train", num_steps=2, num_augs=2, limit=1, jitter=0.5)
    scores = evaluate_run(tiny_run, settings, progress=False, out_name="mine")
    assert scores["settings"]["jitter"] == 0.5  # recorded, with every other field
    saved = orjson.loads((tiny_run / "eval" / "mine" / "scores.json").read_bytes())
    assert {f.name for f in dataclasses.fields(WithJitter)} <= set(saved["settings"])
    with pytest.raises(OutputError, match=r"made with jitter=0.5 \(now 0.25\); pass --force"):
        evaluate_run(
            tiny_run, dataclasses.replace(settings, jitter=0.25), progress=False, out_name="mine"
        )
    evaluate_run(tiny_run, settings, progress=False)  # the run's config has no jitter: tagged
    folders = {p.name for p in (tiny_run / "eval").iterdir()}
    assert "aa1_train~steps2-augs2-limit1-jitter0.5" in folders
