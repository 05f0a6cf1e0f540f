"""One writer per run directory: a real second process holds the lock, the CLI is refused in
one line naming it; kill -9 frees it (the kernel drops a dead process's flock)."""

import os
import signal
import subprocess
import sys

import pytest

from arcdiff.cli import app
from arcdiff.errors import OutputError
from arcdiff.runs.lock import LOCK, run_lock
from tests.test_cli import one_error_line
from tests.test_cli_train import set_args

HOLD = "from arcdiff.runs.lock import run_lock; import sys, time\n" + (
    "with run_lock(__import__('pathlib').Path(sys.argv[1]), 'train'):\n"
    "    print('held', flush=True); time.sleep(120)\n"
)


def hold(run):
    """A second process holding ``run``'s lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holder(tmp_path):
    run = tmp_path / "run"
    proc = hold(run)
    yield run, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(runner, tmp_path):
    run = tmp_path / "run"
    trained = ["train", "--out", str(run), "--no-progress", *set_args(train__max_steps=2)]
    assert runner.invoke(app, trained).exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = hold(run)
    try:
        for args in (
            ["train", "--out", str(run), "--resume", "--no-progress"],
            ["evaluate", "--run", str(run), "--split", "aa1:train", "--no-progress"],
            ["report", str(run)],
            ["pipeline", "--out", str(run), "--no-progress"],
            ["lora", "--run", str(run), "--tasks", "aa1:train", "--no-evaluate"],
        ):
            line = one_error_line(runner.invoke(app, args))
            assert f"is in use by another writer (pid {proc.pid}: arcdiff train)" in line, args
    finally:
        proc.kill()
        proc.wait()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}
    assert after == {p: b for p, b in before.items() if p.name != LOCK}  # nothing written


def test_kill_9_releases_the_lock(holder):
    run, proc = holder
    with pytest.raises(OutputError, match=f"pid {proc.pid}"), run_lock(run, "report"):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / LOCK).exists()  # the file stays; the lock went with the process
    with run_lock(run, "report"):
        assert (run / LOCK).read_text().split() == [str(os.getpid()), "report"]


def test_one_process_may_hold_its_own_lock_again(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, "pipeline"), run_lock(run, "train"), run_lock(run, "evaluate"):
        assert (run / LOCK).read_text().split() == [str(os.getpid()), "pipeline"]
    # released: another process takes it
    taken = subprocess.run([sys.executable, "-c", HOLD.replace("120", "0"), str(run)], check=False)
    assert taken.returncode == 0


def test_only_rank_0_of_torchrun_takes_the_lock(holder, monkeypatch):
    run, _ = holder
    monkeypatch.setenv("RANK", "1")
    with run_lock(run, "train"):  # ranks other than 0 write nothing: no lock to take
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(OutputError, match="in use by another writer"), run_lock(run, "train"):
        pass


def test_a_run_directory_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "afile").write_text("")
    made = pytest.raises(OutputError, match="afile/run: cannot create the run directory")
    with made, run_lock(tmp_path / "afile" / "run", "train"):
        pass
