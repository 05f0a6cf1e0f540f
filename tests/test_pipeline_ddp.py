"""``arcdiff pipeline`` and ``arcdiff evaluate`` on two gloo ranks: rank 0 alone evaluates."""

import shutil
from pathlib import Path

import orjson
import pytest
import torch.multiprocessing as mp
from typer.testing import CliRunner

from arcdiff.cli import app
from tests.conftest import as_torchrun_rank, tiny_overrides
from tests.train.test_ddp import free_port

SETTINGS = {
    "train__max_steps": 3,
    "eval__split": "aa1:train",
    "eval__limit": 2,
    "eval__num_steps": 2,
    "eval__num_augs": 2,
}


def set_args(**extra: object) -> list[str]:
    return [a for o in tiny_overrides(**SETTINGS, **extra) for a in ("--set", o)]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    """One rank as torchrun starts it: the pipeline, then an evaluation with other steps."""
    as_torchrun_rank(rank, world, port)
    run = f"{out}/run"
    commands = {
        "pipeline": ["pipeline", "--out", run, *set_args()],
        "evaluate": ["evaluate", "--run", run, "--num-steps", "3", *set_args()],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress"])
        Path(f"{out}/{name}{rank}.txt").write_text(result.output)
        if result.exit_code != 0:
            raise RuntimeError(f"rank {rank} {name}: {result.output[-2000:]}") from result.exception


def _scored(folder: Path) -> tuple[dict, dict, bytes]:
    scores = orjson.loads((folder / "scores.json").read_bytes())
    return scores["summary"], scores["per_task"], (folder / "predictions.json").read_bytes()


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_two_ranks_train_then_rank_0_alone_evaluates_as_one_process_does(tmp_path):
    mp.start_processes(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["aa1_train", "aa1_train~steps3"]
    assert (run / "report" / "report.md").is_file()
    said = {f.stem: f.read_text() for f in tmp_path.glob("*.txt")}
    assert "pass@2" in said["pipeline0"] and "pass@2" in said["evaluate0"]
    assert "pass@2" not in said["pipeline1"] and said["evaluate1"] == ""
    assert "trained 3 steps" in said["pipeline0"] and "trained" not in said["pipeline1"]

    # the same final.pt evaluated by one process into a copy of the run
    alone = tmp_path / "alone"
    shutil.copytree(run, alone, ignore=shutil.ignore_patterns("eval", "report", ".lock"))
    result = CliRunner().invoke(
        app, ["evaluate", "--run", str(alone), "--device", "cpu", "--no-progress", *set_args()]
    )
    assert result.exit_code == 0, result.output
    summary, per_task, predictions = _scored(alone / "eval" / "aa1_train")
    assert len(per_task) == 2
    assert _scored(run / "eval" / "aa1_train") == (summary, per_task, predictions)
