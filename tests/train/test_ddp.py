"""DistributedDataParallel on CPU: two processes on the gloo backend."""

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
import torch.multiprocessing as mp
from rich.console import Console
from typer.testing import CliRunner

from arcdiff.config import load_config
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.distributed import rank_device
from arcdiff.train.logging import read_metrics
from arcdiff.train.trainer import train
from tests.conftest import as_torchrun_rank, tiny_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_worker(rank: int, world: int, port: int, out: str, args: list[str]) -> None:
    """One rank of ``arcdiff train`` with the variables torchrun sets; keeps its final weights."""
    as_torchrun_rank(rank, world, port)
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


def _mean_worker(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: Distributed.mean, then one training step, counting the all-reduces."""
    as_torchrun_rank(rank, world, port)
    import torch.distributed as dist

    from arcdiff.data.dataset import stream_from_config
    from arcdiff.diffusion.discrete import DiscreteDiffusion
    from arcdiff.runs.device import seeded_generator
    from arcdiff.train.distributed import Distributed
    from arcdiff.train.optim import make_optimizer
    from arcdiff.train.step import TrainStep

    ddp = Distributed(torch.device("cpu"))
    reduced: list[str] = []
    real = dist.all_reduce

    def counted(tensor, *args, **kwargs):
        reduced.append(f"{tensor.device}:{tensor.dtype}:{tensor.numel()}")
        return real(tensor, *args, **kwargs)

    dist.all_reduce = counted
    means = ddp.mean(torch.tensor([float(rank), 10.0 * rank + 1.0])).tolist()
    host = ddp.mean_of(1.0 + rank, 4.0)
    calls_for_means = len(reduced)
    cfg = load_config(None, tiny_overrides())
    torch.manual_seed(0)
    stream = stream_from_config(cfg.data, rank=rank, world_size=world)
    model = build_model(cfg, stream.num_tasks)
    forward = torch.nn.parallel.DistributedDataParallel(model)
    step = TrainStep(
        model=model,
        forward=forward,
        diffusion=DiscreteDiffusion.from_config(cfg.diffusion),
        optimizer=make_optimizer(model, 1e-3, 0.0, ddp.device),
        grad_clip=1.0,
        size_loss_weight=0.1,
        grad_accum=2,
        no_sync=forward.no_sync,
        mean=ddp.mean,
    )
    gen = seeded_generator("cpu", rank)
    reduced.clear()
    r = step(stream.sample, 8, gen, gen, 0, device=ddp.device)
    result = {"means": means, "host": host, "calls_for_means": calls_for_means}
    result |= {"step_reduces": reduced, "loss": r.loss, "parts": r.parts}
    Path(f"{out}/rank{rank}.json").write_text(orjson.dumps(result).decode())
    ddp.close()


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_the_step_averages_its_scalars_in_one_all_reduce_on_the_rank_device(tmp_path):
    mp.start_processes(
        _mean_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    ranks = [orjson.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for got in ranks:
        assert got["means"] == [0.5, 6.0]  # the mean of [0, 1] and of [1, 11]
        assert got["host"] == [1.5, 4.0] and got["calls_for_means"] == 2
        # the loss and its two parts, over both micro-batches, in one float64 all-reduce
        assert got["step_reduces"] == ["cpu:torch.float64:3"]
    assert ranks[0]["loss"] == ranks[1]["loss"] and ranks[0]["parts"] == ranks[1]["parts"]


def test_an_explicit_cuda_device_takes_the_local_rank_under_torchrun():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert rank_device(cuda, 3, enabled=True) == torch.device("cuda", 3)
    assert rank_device(cuda, 3, enabled=False) == cuda  # one process: as given
    assert rank_device(torch.device("cuda", 1), 3, enabled=True) == torch.device("cuda", 1)
    assert rank_device(cpu, 3, enabled=True) == cpu


RESEEDED = "the corruption noise is re-seeded at step 2"


def _resume_in_process(run: Path, overrides: list[str]) -> str:
    console = Console(file=io.StringIO(), width=300)
    result = train(load_config(None, overrides), run, resume=True, progress=False, console=console)
    assert result.step == 4
    return console.file.getvalue()


@pytest.mark.slow  # two spawned ranks, then one process; the reverse below runs by default
def test_resuming_two_ranks_on_one_process_reseeds_the_noise_in_one_line(tmp_path):
    first = tiny_overrides(train__max_steps=2, train__eval_every=2)
    args = ["--no-progress", *(a for o in first for a in ("--set", o))]
    mp.start_processes(
        _cli_worker, args=(2, free_port(), str(tmp_path), args), nprocs=2, start_method="spawn"
    )
    said = _resume_in_process(tmp_path / "run", tiny_overrides(train__max_steps=4))
    lines = [line for line in said.splitlines() if RESEEDED in line]
    assert len(lines) == 1 and "saved by 2 process(es), resumed on 1" in lines[0]
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_resuming_one_process_on_two_ranks_reseeds_the_noise_in_one_line(tmp_path):
    first = tiny_overrides(train__max_steps=2, train__eval_every=2)
    train(load_config(None, first), tmp_path / "run", progress=False, console=Console(quiet=True))
    overrides = tiny_overrides(train__max_steps=4)
    args = ["--no-progress", "--resume", *(a for o in overrides for a in ("--set", o))]
    mp.start_processes(
        _cli_worker, args=(2, free_port(), str(tmp_path), args), nprocs=2, start_method="spawn"
    )
    said = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    lines = [line for line in said[0].splitlines() if RESEEDED in line]
    assert len(lines) == 1 and "saved by 1 process(es), resumed on 2" in lines[0]
    assert RESEEDED not in said[1]  # only rank 0 speaks
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w, rank1[name]) for name, w in rank0.items())
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
