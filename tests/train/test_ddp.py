"""DistributedDataParallel on CPU: two processes on the gloo backend."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from arcdiff.config import load_config
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.logging import read_metrics
from arcdiff.train.trainer import train
from tests.conftest import tiny_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_worker(rank: int, world: int, port: int, out: str, args: list[str]) -> None:
    """One rank of ``arcdiff train`` with the variables torchrun sets; keeps its final weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    from arcdiff.cli import app
    from arcdiff.train import trainer

    def train_and_keep(*a, **k):  # only rank 0 checkpoints: save every rank's weights here
        result = train(*a, **k)
        torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
        return result

    trainer.train = train_and_keep  # the command imports train from the module when it runs
    result = CliRunner().invoke(app, ["train", "--out", f"{out}/run", "--device", "cpu", *args])
    Path(f"{out}/rank{rank}.txt").write_text(result.output)
    if result.exit_code != 0:
        raise RuntimeError(f"rank {rank}: {result.output[-2000:]}") from result.exception


def test_the_cli_on_two_gloo_ranks_ends_with_identical_weights(tmp_path):
    overrides = tiny_overrides(train__max_steps=4)
    args = ["--no-progress", *(a for o in overrides for a in ("--set", o))]
    mp.start_processes(
        _cli_worker, args=(2, free_port(), str(tmp_path), args), nprocs=2, start_method="spawn"
    )
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for name, weight in rank0.items():
        assert torch.equal(weight, rank1[name]), name
    torch.manual_seed(0)  # train() seeds with train.seed (0) before building the model
    init = build_model(load_config(None, overrides), num_tasks=6).state_dict()
    assert any(not torch.equal(init[n], w) for n, w in rank0.items())
    assert "world size 2" in (tmp_path / "rank0.txt").read_text()
    # only rank 0 logs and checkpoints: one metrics row per step
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["examples_per_s"] > 0
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists()


@pytest.mark.slow  # the launcher itself; the test above runs the CLI on torchrun's variables
def test_torchrun_runs_the_cli_on_two_processes(tmp_path):
    args = [a for o in tiny_overrides(train__max_steps=4) for a in ("--set", o)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "arcdiff",
        "train",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--no-progress",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "world size 2" in result.stdout
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["examples_per_s"] > 0
