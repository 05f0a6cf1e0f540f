"""Faults a user meets in the first hour (issue 30), each through the real command line:
two writers into one run (real processes), out of memory (a real memory limit), a device this
torch lacks (the CPU build itself), resume and pipeline on existing runs, read-only outputs."""

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import torch

from arcdiff.cli import app
from tests.conftest import SMALL_TASKS
from tests.test_cli import one_error_line
from tests.test_cli_train import set_args

CLI = [sys.executable, "-m", "arcdiff"]


def loss_steps(run: Path) -> list[int]:
    rows = [orjson.loads(line) for line in (run / "metrics.jsonl").read_bytes().splitlines()]
    return [r["step"] for r in rows if "loss" in r and not r.get("skipped")]


def one_line_stderr(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start every command at once; wait for all."""
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    out = []
    for c, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_two_writers_into_one_run_one_runs_the_other_is_refused(tmp_path):
    run = tmp_path / "run"
    fresh = [*CLI, "train", "--out", str(run), "--no-progress", *set_args(train__max_steps=250)]
    first = together(fresh, fresh)
    assert sorted(p.returncode for p in first) == [0, 1], [p.stderr for p in first]
    refused = next(p for p in first if p.returncode)
    assert "is in use by another writer (pid" in one_line_stderr(refused)
    assert loss_steps(run) == list(range(1, 251))

    resume = [*CLI, "train", "--out", str(run), "--resume", "--no-progress"]
    resume += ["--set", "train.max_steps=500"]
    second = together(resume, resume)
    assert sorted(p.returncode for p in second) == [0, 1], [p.stderr for p in second]
    assert "is in use by another writer" in one_line_stderr(next(p for p in second if p.returncode))
    assert loss_steps(run) == list(range(1, 501))  # each step once


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_out_of_memory_is_one_line_naming_the_batch_size_and_writes_nothing(tmp_path):
    def limit_memory() -> None:  # 2 GiB of address space: torch loads, a 100,000 batch does not
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    run = tmp_path / "run"
    args = [*CLI, "train", "--out", str(run), "--no-progress"]
    args += set_args(train__batch_size=100_000)
    proc = subprocess.run(
        args, capture_output=True, text=True, preexec_fn=limit_memory, check=False, timeout=300
    )
    line = one_line_stderr(proc)
    assert "out of memory" in line and "train.batch_size=100000; lower it" in line
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no half-made run


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_this_torch_lacks_is_one_line(runner, tmp_path, device):
    run = tmp_path / "run"
    train = runner.invoke(app, ["train", "--out", str(run), "--device", device, *set_args()])
    assert f"--device {device}: " in one_error_line(train)
    assert "use --device cpu" in one_error_line(train)
    assert not run.exists()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A run made from a preset with --set overrides (as a user would), trained 4 steps and
    evaluated with the pipeline."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("faults") / "run"
    extra = set_args(
        train__max_steps=4,
        eval__split="aa1:train",
        eval__num_steps=2,
        eval__num_augs=2,
        train__quick_eval_every=None,
    )
    args = ["pipeline", "--config", "toiny_aa1", "--out", str(run), "--no-progress", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run, extra


def test_evaluate_on_a_device_this_torch_lacks_is_one_line(runner, small_run):
    if torch.cuda.is_available():
        pytest.skip("needs a torch without CUDA")
    run, _ = small_run
    for device in ("cuda", "mps"):
        result = runner.invoke(app, ["evaluate", "--run", str(run), "--device", device])
        assert f"--device {device}: " in one_error_line(result)


def test_resume_reads_the_runs_config_and_allows_only_safe_changes(runner, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    longer = ["train", "--out", str(run), "--resume", "--no-progress"]
    result = runner.invoke(app, [*longer, "--set", "train.max_steps=6"])
    assert result.exit_code == 0, result.output
    assert "done: 6 steps (max_steps)" in result.stdout
    assert loss_steps(run) == list(range(1, 7))
    # the old spelling of a run to read, and a resume with nothing left to do
    again = runner.invoke(app, ["train", "--run", str(run), "--resume", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "done: 6 steps (max_steps); 0 skipped; run dir" in again.stdout
    assert "; ;" not in again.stdout
    unsafe = ["--set", "train.lr=0.5", "--set", "model.d_model=64", "--set", "train.max_steps=9"]
    line = one_error_line(runner.invoke(app, [*longer, *unsafe]))
    assert "--set changes 2 field(s) of" in line  # train.max_steps may change
    assert "model.d_model: expected 32, found 64" in line and "train.lr: expected" in line
    assert loss_steps(run) == list(range(1, 7))
    # the preset alone names another run (no overrides): the run's own config.json wins
    preset = runner.invoke(app, [*longer, "--config", "toiny_aa1"])
    assert preset.exit_code == 0, preset.output
    assert "it continues with its own config.json; --config toiny_aa1 differs in" in preset.stdout
    assert "done: 6 steps" in preset.stdout


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_pipeline_on_a_finished_run_evaluates_and_reports_without_training(
    runner, small_run, tmp_path
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    extra = small_run[1]
    scores = run / "eval" / "aa1_train" / "scores.json"
    before = {p: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    metrics, saved = (run / "metrics.jsonl").read_bytes(), scores.read_bytes()
    (run / "report" / "report.html").unlink()
    for again in (
        ["pipeline", "--config", "toiny_aa1", "--out", str(run)],  # the command
        ["pipeline", "--config", "toiny_aa1", "--out", str(run), *extra],
        ["pipeline", "--out", str(run)],
        ["pipeline", "--out", str(run), "--resume"],  # the old spelling still works
    ):
        result = runner.invoke(app, [*again, "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "is trained: evaluating and reporting it" in result.stdout
        assert "reusing it (--force evaluates again)" in result.stdout
        assert scores.read_bytes() == saved  # not evaluated over its own eval folder
    assert (run / "report" / "report.html").is_file()
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert {p: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    forced = runner.invoke(app, ["pipeline", "--out", str(run), "--force", "--no-progress"])
    assert forced.exit_code == 0 and "reusing" not in forced.stdout
    assert scores.read_bytes() != saved  # evaluated again (its wall time differs)
    shutil.rmtree(scores.parent)
    absent = runner.invoke(app, ["pipeline", "--out", str(run), "--no-progress"])
    assert absent.exit_code == 0 and scores.is_file()
    assert (run / "metrics.jsonl").read_bytes() == metrics


def test_evaluation_checks_its_folder_before_sampling(runner, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    shutil.rmtree(run / "eval")
    (run / "eval").write_text("a file where the eval folder goes")
    result = runner.invoke(app, ["evaluate", "--run", str(run), "--split", "aa1:train"])
    line = one_error_line(result)
    assert "cannot be written" in line and "is not a folder); nothing was sampled" in line
    assert "sampling" not in result.stdout


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: a read-only bind mount for root (whom file modes
    do not stop), the write bits off for anyone else."""
    if os.geteuid() == 0:
        bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False)
        ro = ["mount", "-o", "remount,ro,bind", str(folder)]
        if bind.returncode or subprocess.run(ro, check=False).returncode:
            pytest.skip("root cannot make a read-only mount here")
        try:
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    paths = [folder, *folder.rglob("*")]
    for p in paths:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | 0o200)


def test_evaluating_a_read_only_run_fails_before_sampling(runner, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    with read_only(run):
        result = runner.invoke(app, ["evaluate", "--run", str(run), "--num-steps", "1"])
        assert "cannot write into the run directory" in one_error_line(result)
        assert "sampling" not in result.stdout


def test_no_vote_is_tagged_as_sampled(runner, small_run):
    run, _ = small_run
    args = ["evaluate", "--run", str(run), "--split", "aa1:train", "--no-progress"]
    result = runner.invoke(app, [*args, "--no-maj", "--num-augs", "4", "--limit", "1"])
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in (run / "eval").iterdir())
    assert "aa1_train~nomaj-limit1" in folders and not any("augs4" in f for f in folders)
    scores = orjson.loads((run / "eval" / "aa1_train~nomaj-limit1" / "scores.json").read_bytes())
    assert scores["settings"]["num_augs"] == 1 and scores["settings"]["maj"] is False


def test_new_tasks_point_to_the_command_that_handles_them(runner, tmp_path):
    run = tmp_path / "run"
    trained = set_args(train__max_steps=2, data__ids=None, data__limit=len(SMALL_TASKS))
    assert (
        runner.invoke(app, ["train", "--out", str(run), "--no-progress", *trained]).exit_code == 0
    )
    result = runner.invoke(app, ["evaluate", "--run", str(run), "--split", "aa1:eval"])
    line = one_error_line(result)
    assert "have no embedding in this model (it never trained on them:" in line
    assert f"`arcdiff lora --run {run} --tasks aa1:eval`" in line


def test_pipeline_continues_an_interrupted_run_with_its_config(runner, tmp_path):
    from arcdiff.config import load_config
    from arcdiff.train.trainer import train
    from tests.conftest import tiny_overrides

    run = tmp_path / "run"
    overrides = tiny_overrides(
        train__max_steps=4, eval__split="aa1:train", eval__num_steps=2, eval__num_augs=2
    )
    train(load_config("toiny_aa1", overrides), run, until_step=2, progress=False)  # as if killed
    assert not (run / "checkpoints" / "final.pt").exists()
    result = runner.invoke(app, ["pipeline", "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "(step 2)" in result.stdout and "trained 4 steps (max_steps)" in result.stdout
    assert loss_steps(run) == [1, 2, 3, 4]
    assert (run / "eval" / "aa1_train" / "scores.json").is_file()
