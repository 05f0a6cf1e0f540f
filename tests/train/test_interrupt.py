"""Training survives kill -9, Ctrl-C, SIGTERM and full disks, with nothing lost or overwritten.

The killed runs are real processes (``python -m arcdiff train``) on real ARC tasks; each is
resumed and must end with the weights of a run that was never interrupted, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import torch

from arcdiff.cli import app
from arcdiff.config import load_config
from arcdiff.errors import OutputError
from arcdiff.runs.checkpoint import load_checkpoint
from arcdiff.runs.lock import LOCK
from arcdiff.train import trainer as trainer_module
from arcdiff.train.logging import read_metrics
from arcdiff.train.trainer import train
from arcdiff.train.validate import closing_estimate
from tests.conftest import tiny_overrides
from tests.test_cli import one_error_line

# One thread, so the killed process and the run it is compared with add up in the same order.
ONE_THREAD = {"train.threads": 1, "train.checkpoint_minutes": 0}


def overrides(**extra: object) -> list[str]:
    return tiny_overrides(**{k.replace(".", "__"): v for k, v in ONE_THREAD.items()}, **extra)


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def quiet_train(run_dir: Path, **kw):
    extra = kw.pop("extra", {})
    cfg = load_config(None, overrides(**extra))
    return train(cfg, run_dir, device=torch.device("cpu"), progress=False, **kw)


def start(run_dir: Path, *flags: str, **extra: object) -> subprocess.Popen:
    args = [sys.executable, "-m", "arcdiff", "train", "--out", str(run_dir), "--no-progress"]
    args += [a for o in overrides(**extra) for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*args, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def loss_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "loss" in r and "skipped" not in r]


def same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    for part in ("model", "ema"):
        for name, tensor in sa[part].items():
            assert torch.equal(tensor, sb[part][name]), f"{part}.{name}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 24-step run: what every interrupted run must end as."""
    run = tmp_path_factory.mktemp("straight") / "run"
    quiet_train(run, extra={"train.max_steps": 24, "train.save_every": 3})
    return run


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_last_and_the_run_resumes_exactly(tmp_path, straight, sig, code):
    run = tmp_path / "run"
    proc = start(run, **{"train.max_steps": 24, "train.save_every": 3})
    wait_for(lambda: len(loss_steps(run)) >= 4, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted at step" in lines[0] and "--resume" in lines[0], lines[0]
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert saved == loss_steps(run)[-1] and f"at step {saved} " in lines[0]
    quiet_train(run, resume=True, extra={"train.max_steps": 24, "train.save_every": 3})
    same_weights(straight / "checkpoints" / "final.pt", run / "checkpoints" / "final.pt")
    assert loss_steps(run) == list(range(1, 25))  # every step once


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_kill_9_resumes_from_the_newest_step_file(tmp_path, straight, capsys):
    run = tmp_path / "run"
    proc = start(run, **{"train.max_steps": 24, "train.save_every": 3, "train.eval_every": 1000})
    wait_for(lambda: (run / "checkpoints" / "step_0000009.pt").exists(), proc)
    proc.kill()
    proc.wait()
    assert not (run / "checkpoints" / "last.pt").exists()  # as before: only step files
    newest = max(load_checkpoint(p)["step"] for p in (run / "checkpoints").glob("step_*.pt"))
    extra = {"train.max_steps": 24, "train.save_every": 3, "train.eval_every": 1000}
    quiet_train(run, resume=True, extra=extra)
    assert f"step_{newest:07d}.pt (step {newest})" in capsys.readouterr().out
    same_weights(straight / "checkpoints" / "final.pt", run / "checkpoints" / "final.pt")
    assert loss_steps(run) == list(range(1, 25))


def test_an_unreadable_newest_checkpoint_is_skipped_and_named(tmp_path, capsys):
    run = tmp_path / "run"
    quiet_train(run, until_step=5, extra={"train.save_every": 2, "train.max_steps": 8})
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short, as by a full disk
    result = quiet_train(run, resume=True, extra={"train.save_every": 2, "train.max_steps": 8})
    out = capsys.readouterr().out
    assert "skipped" in out and "last.pt: not a readable checkpoint" in out
    assert "step_0000004.pt (step 4)" in out and result.step == 8
    assert loss_steps(run) == list(range(1, 9))


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
    result = quiet_train(run, resume=True)
    assert "no checkpoint was saved yet; starting the run again from step 0" in (
        capsys.readouterr().out
    )
    assert result.step == 6 and loss_steps(run) == list(range(1, 7))


@pytest.mark.parametrize("present", ["metrics.jsonl", "config.json", "checkpoints/step_0000005.pt"])
def test_a_new_run_never_replaces_part_of_an_old_one(tmp_path, runner, present):
    run = tmp_path / "run"
    (run / present).parent.mkdir(parents=True, exist_ok=True)
    (run / present).write_bytes(b"the old run's file")
    args = ["train", "--out", str(run), "--no-progress"]
    result = runner.invoke(app, args + [a for o in overrides() for a in ("--set", o)])
    assert result.exit_code == 1
    assert "already holds a run; pass --resume" in one_error_line(result)
    assert present in one_error_line(result)
    kept = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    assert [p for p in kept if p != LOCK] == [present]  # the lock file is the refused run's
    assert (run / present).read_bytes() == b"the old run's file"


def test_last_pt_is_also_written_by_the_clock(tmp_path):
    def last_steps(run: Path, minutes: float) -> list[int | None]:
        seen: list[int | None] = []

        def look(ema, step):
            last = run / "checkpoints" / "last.pt"
            seen.append(load_checkpoint(last)["step"] if last.exists() else None)
            return {}

        extra = {"train.eval_every": 1000, "train.quick_eval_every": 1, "train.max_steps": 4}
        quiet_train(run, on_eval=look, extra={**extra, "train.checkpoint_minutes": minutes})
        return seen

    # saved before each step: at most one step is ever lost
    assert last_steps(tmp_path / "clock", 1e-9) == [0, 1, 2, 3]
    assert last_steps(tmp_path / "off", 0) == [None] * 4


def test_the_time_budget_includes_the_closing_validation(tmp_path, monkeypatch):
    real = trainer_module.validate

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", slow)
    extra = {"train.max_steps": 10_000, "train.max_minutes": 0.05, "train.eval_every": 2}
    result = quiet_train(tmp_path / "run", extra=extra)
    done = read_metrics(tmp_path / "run")[-1]
    assert result.stop_reason == "max_minutes"
    # without the reserve the last validation would start at the deadline and end 1 s late
    assert done["wall_s"] < 3.0 + 0.5, done


def test_the_closing_validation_estimate_scales_with_its_passes():
    cfg = load_config(None, overrides(**{"train.batch_size": 8, "model.self_condition": False}))
    assert closing_estimate(0.3, 16, cfg) == pytest.approx(5 * 0.3 * 2 / 2)
    sc = load_config(None, overrides(**{"train.batch_size": 8, "model.self_condition": True}))
    assert closing_estimate(0.3, 16, sc) == pytest.approx(10 * 0.3 * 2 / 2)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the disk, then free ``leave`` bytes (room for metrics rows, not a checkpoint)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_a_full_disk_stops_training_with_the_last_checkpoint_intact(small_disk):
    run = small_disk / "run"

    def fill_after_first_save(ema, step):
        if step == 4:  # last.pt holds step 3; the save at step 6 finds the disk full
            fill(small_disk, leave=64 * 1024)
        return {}

    extra = {"train.quick_eval_every": 1, "train.eval_every": 3}
    with pytest.raises(OutputError, match=r"last.pt: could not write the checkpoint") as e:
        quiet_train(run, on_eval=fill_after_first_save, extra=extra)
    assert "No space left on device" in str(e.value) and "previous version is intact" in str(
        e.value
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not list(run.rglob("*.tmp"))


def test_a_full_disk_in_the_cli_is_one_line(small_disk, runner):
    fill(small_disk)
    args = ["train", "--out", str(small_disk / "run"), "--no-progress"]
    result = runner.invoke(app, args + [a for o in overrides() for a in ("--set", o)])
    assert result.exit_code == 1
    assert "No space left on device" in one_error_line(result)
    assert not list(small_disk.rglob("*.tmp"))


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_unwritable_out_is_one_line(tmp_path, runner, where):
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        out, reason = tmp_path / "file" / "run", "Not a directory"
    else:
        out, reason = Path("/proc/arcdiff-run"), "cannot create the run directory"
    result = runner.invoke(app, ["train", "--out", str(out), "--no-progress", "--set", "x.y=1"])
    assert "unknown" in one_error_line(result)  # config errors come first, as before
    args = ["train", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args + [a for o in overrides() for a in ("--set", o)])
    assert result.exit_code == 1
    assert reason in one_error_line(result) and str(out) in one_error_line(result)


@pytest.mark.slow
def test_ten_random_kills_resume_to_the_same_weights(tmp_path, straight):
    """Fault injection: SIGKILL at a seeded random moment of each of ten runs (saves included:
    a checkpoint every step), then resume to the end; every resume ends as the straight run."""
    rng = random.Random(0)
    extra = {"train.max_steps": 24, "train.save_every": 1, "train.eval_every": 5}
    torn_saves = 0
    for i in range(10):
        run = tmp_path / f"run{i}"
        proc = start(run, **extra)
        # a seeded moment: after a random number of logged steps, a random part of a step
        logged = rng.randrange(0, 22)
        wait_for(lambda run=run, n=logged: len(loss_steps(run)) >= n, proc)
        time.sleep(rng.uniform(0.0, 0.04))  # a step and its save take ~20-40 ms here
        proc.kill()
        proc.wait()
        assert not (run / "checkpoints" / "final.pt").exists(), "killed too late"
        torn_saves += bool(list(run.glob("checkpoints/.*.tmp")))
        quiet_train(run, resume=True, extra=extra)
        same_weights(straight / "checkpoints" / "final.pt", run / "checkpoints" / "final.pt")
        assert loss_steps(run) == list(range(1, 25)), i
        assert not list(run.glob("checkpoints/.*.tmp"))
    print(f"{torn_saves} of 10 kills landed inside a checkpoint save")


def test_metrics_rows_cut_short_by_a_kill_are_left_out(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(orjson.dumps({"step": 1}) + b'\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1}]
