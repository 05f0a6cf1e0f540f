"""A clock budget that stays reproducible: the learning rate is a function of the step and a
horizon fixed once (train/horizon.py), so runs of the CPU preset with one seed agree bit for bit,
a killed and resumed run equals a straight one, and the progress line counts the budget's
minutes. Every run here keeps the preset's levers (Muon, 2D rotary positions without learned
positions, self-supervised grids, size buckets, checkpoints by the clock) at a tiny width."""

from __future__ import annotations

import functools
import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import torch
from rich.console import Console

from arcdiff.config import load_config
from arcdiff.runs.checkpoint import load_checkpoint, save_checkpoint
from arcdiff.runs.cpu import CpuWatch
from arcdiff.train import trainer as trainer_module
from arcdiff.train.horizon import Horizon, estimate_horizon
from arcdiff.train.logging import read_metrics
from arcdiff.train.optim import lr_factor
from arcdiff.train.trainer import train
from tests.conftest import TINY, as_overrides
from tests.train.test_interrupt import loss_steps, same_weights, wait_for

# the preset's recipe at the tests' tiny width and data (its levers stay as the preset has them)
PRESET_AT_TINY_WIDTH = {
    **{k: v for k, v in TINY.items() if k.startswith(("data.", "model."))},
    "train.batch_size": 8,
    "train.warmup_steps": 4,
    "train.eval_every": 10,
    "train.quick_eval_every": None,
    "train.checkpoint_minutes": 0.002,  # last.pt every 0.12 s: several a run
    "train.max_minutes": 20,
    "train.threads": 1,
}


def preset_overrides(**extra: object) -> list[str]:
    return as_overrides(PRESET_AT_TINY_WIDTH, **extra)


def preset(**extra: object):
    cfg = load_config("toiny_aa1", preset_overrides(**extra))
    t, m, d = cfg.train, cfg.model, cfg.data
    assert t.optimizer == "muon" and m.rope and not m.abs_pos  # the preset's levers
    assert d.self_supervised > 0 and d.bucket_window > 1
    return cfg


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def quiet(cfg, run_dir: Path, **kw):
    return train(cfg, run_dir, device=torch.device("cpu"), progress=False, **kw)


def lr_rows(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["lr"]) for r in read_metrics(run_dir) if "lr" in r]


def test_the_horizon_estimate_spends_the_budget_less_the_validations():
    # 100 s left, 0.5 s a step, a 2 s validation every 10 steps and one at the end
    assert estimate_horizon(
        step=49, step_s=0.5, remaining_s=100.0, val_s=2.0, eval_every=10, max_steps=10_000
    ) == 49 + int(98 / 0.7)
    assert (
        estimate_horizon(
            step=49, step_s=0.5, remaining_s=100.0, val_s=0.0, eval_every=10, max_steps=100
        )
        == 100
    )  # never past max_steps
    assert (
        estimate_horizon(
            step=49, step_s=0.5, remaining_s=-5.0, val_s=0.0, eval_every=10, max_steps=100
        )
        == 50
    )  # the budget is spent: the cosine ends at the next step


def test_a_horizon_is_fixed_only_under_a_clock_budget_and_after_the_warmup():
    assert Horizon.of_train(preset(train__max_minutes=None, train__max_steps=77).train).steps == 77
    assert Horizon.of_train(preset(train__horizon_steps=33).train).steps == 33
    h = Horizon.of_train(preset().train)  # 20 minutes, warmup 4
    assert h.pending and not h.due(10)  # nothing timed yet
    for _ in range(2):
        h.time_step(0.1)
    assert not h.due(3)  # two steps timed: one after the first is too few
    h.time_step(0.1)
    assert not h.due(1) and h.due(3)  # step 3's update gives step 4 its first post-warmup LR
    assert h.factor(2) == pytest.approx(0.75) and h.factor(50) == 1.0  # pending: the peak
    assert h.mean_step_s() == pytest.approx(0.1)
    assert h.fix(3, elapsed_s=0.5, step_s=0.1, val_s=0.0) == 3 + 11_995  # 1199.5 s of 0.1 s
    assert h.steps == 11_998 and not h.due(20)


def test_two_runs_of_the_preset_with_one_seed_are_bit_identical(tmp_path):
    cfg = preset(train__max_steps=24)
    first, second = tmp_path / "a", tmp_path / "b"
    quiet(cfg, first)
    time.sleep(0.5)  # the second run sees other clock readings
    quiet(cfg, second)
    same_weights(first / "checkpoints" / "final.pt", second / "checkpoints" / "final.pt")
    assert lr_rows(first) == lr_rows(second)
    saved = orjson.loads((first / "config.json").read_bytes())
    assert saved["train"]["horizon_steps"] == 24  # 20 minutes buy more: max_steps caps it


def test_an_estimated_horizon_is_logged_saved_and_the_only_input_of_the_schedule(tmp_path):
    cfg = preset(train__max_minutes=0.04, train__max_steps=100_000)  # 2.4 seconds
    run = tmp_path / "run"
    result = quiet(cfg, run)
    assert result.stop_reason == "max_minutes"
    rows = read_metrics(run)
    (fixed,) = [r for r in rows if "step_s" in r]
    horizon = fixed["horizon_steps"]
    assert fixed["step"] == cfg.train.warmup_steps - 1 and 4 < horizon < 100_000
    assert orjson.loads((run / "config.json").read_bytes())["train"]["horizon_steps"] == horizon
    assert load_checkpoint(run / "checkpoints" / "final.pt")["horizon_steps"] == horizon
    assert rows[-1]["horizon_steps"] == horizon and rows[-1]["done"] == "max_minutes"
    for step, lr in lr_rows(run):
        assert lr == pytest.approx(cfg.train.lr * lr_factor(step, 4, horizon)), step


def test_a_resumed_run_keeps_its_horizon(tmp_path):
    cfg = preset(train__max_minutes=0.5, train__max_steps=12)
    run = tmp_path / "run"
    quiet(cfg, run, until_step=7)  # past the warmup: the horizon is fixed (max_steps caps it)
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["horizon_steps"] == 12 and state["config"]["train"]["horizon_steps"] == 12
    save_checkpoint(last, {**state, "horizon_steps": 10})  # as a slower machine had fixed it
    quiet(cfg, run, resume=True)  # the config names no horizon: the checkpoint's holds
    for step, lr in lr_rows(run):
        horizon = 12 if step <= 7 else 10
        assert lr == pytest.approx(cfg.train.lr * lr_factor(step, 4, horizon)), step
    assert orjson.loads((run / "config.json").read_bytes())["train"]["horizon_steps"] == 10


def start(run_dir: Path, *flags: str, **extra: object) -> subprocess.Popen:
    args = [sys.executable, "-m", "arcdiff", "train", "--config", "toiny_aa1"]
    args += ["--out", str(run_dir), "--no-progress"]
    args += [a for o in preset_overrides(**extra) for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*args, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_the_preset_killed_twice_resumes_to_the_straight_runs_weights(tmp_path):
    """SIGKILL at two seeded moments (clock checkpoints every 0.12 s), resumed each time; the
    horizon (16) ends the cosine before max_steps, so floor steps are compared too."""
    extra = {"train.max_steps": 30, "train.horizon_steps": 16}
    straight = tmp_path / "straight"
    quiet(preset(**{k.replace(".", "__"): v for k, v in extra.items()}), straight)
    run, rng = tmp_path / "run", random.Random(1)
    for kill, flags in enumerate([(), ("--resume",)]):
        proc = start(run, *flags, **extra)
        logged = len(loss_steps(run)) if (run / "metrics.jsonl").exists() else 0
        target = logged + rng.randrange(4, 10)
        wait_for(lambda n=target: len(loss_steps(run)) >= n, proc)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.wait()
        assert not (run / "checkpoints" / "final.pt").exists(), f"kill {kill} came too late"
    proc = start(run, "--resume", **extra)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    same_weights(straight / "checkpoints" / "final.pt", run / "checkpoints" / "final.pt")
    assert loss_steps(run) == list(range(1, 31)) and lr_rows(run) == lr_rows(straight)


@pytest.mark.parametrize("terminal", [False, True])
def test_the_progress_line_counts_the_budgets_minutes(tmp_path, terminal):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=160)
    cfg = preset(train__max_minutes=0.03, train__max_steps=100_000, train__eval_every=5)
    train(cfg, tmp_path / "run", device=torch.device("cpu"), progress=True, console=console)
    shown = buffer.getvalue()
    assert "/0.03 min" in shown and "steps/s" in shown
    progress = [line for line in shown.splitlines() if "steps/s" in line]
    assert progress and not any("100000" in line or "100,000" in line for line in progress)
    assert "schedule: 0.03 minutes buy about" in shown


def test_a_shared_cpu_is_said_logged_and_the_run_goes_on_one_thread(tmp_path, monkeypatch):
    # a watch that judges every step, and any CPU share below 200% "shared"
    monkeypatch.setattr(
        trainer_module, "CpuWatch", functools.partial(CpuWatch, window_s=0.0, min_busy=2.0)
    )
    buffer = io.StringIO()
    cfg = preset(train__threads=2, train__max_steps=6)
    train(cfg, tmp_path / "run", device=torch.device("cpu"), console=Console(file=buffer))
    assert "the CPU is shared with another process" in buffer.getvalue()
    assert torch.get_num_threads() == 1
    rows = read_metrics(tmp_path / "run")
    (row,) = [r for r in rows if "cpu_busy" in r]
    assert row["threads"] == 1 and row["step"] == 0
    # the warmup is timed again on one thread: the horizon comes from those steps
    (fixed,) = [r for r in rows if "step_s" in r]
    assert fixed["step"] >= 3


def test_flushing_denormals_keeps_a_runs_weights_within_float_tolerance(tmp_path, monkeypatch):
    cfg = preset(train__max_steps=12)
    quiet(cfg, tmp_path / "flushed")
    real = trainer_module.setup_cpu

    def without_flush(*args, **kwargs):
        out = real(*args, **kwargs)
        torch.set_flush_denormal(False)
        return out

    monkeypatch.setattr(trainer_module, "setup_cpu", without_flush)
    quiet(cfg, tmp_path / "kept")
    a = load_checkpoint(tmp_path / "flushed" / "checkpoints" / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "kept" / "checkpoints" / "final.pt")["model"]
    for name, tensor in a.items():
        assert torch.allclose(tensor, b[name], atol=1e-6, rtol=1e-5), name
