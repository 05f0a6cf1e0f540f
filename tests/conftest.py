import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPTS = Path(__file__).parents[1] / "scripts"


def load_script(name: str):
    """A script of scripts/ as a module (run in this process: no second torch import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))  # a script imports its siblings (peer_format, ...)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# Small aa1:train tasks whose grids all fit 5x5: fast real data for trainer tests.
SMALL_TASKS = ["0d3d703e", "25ff71a9", "3c9b0459", "6150a2bd", "a85d4709", "d037b0a7"]


# A seconds-long CPU run on real ARC tasks: a model this small on SMALL_TASKS.
TINY: dict[str, object] = {
    "data.train_sources": ["aa1:train"],
    "data.eval_sources": [],
    "data.ids": SMALL_TASKS,
    "data.max_size": 5,
    "data.val_pairs": 2,
    "model.d_model": 32,
    "model.n_heads": 2,
    "model.n_layers": 1,
    "train.batch_size": 8,
    "train.max_steps": 6,
    "train.warmup_steps": 2,
    "train.eval_every": 3,
    "train.lr": 1e-3,
}


def as_overrides(values: dict[str, object], **extra: object) -> list[str]:
    """``--set`` strings for ``values`` and ``extra`` (``section__key=value``)."""
    import orjson

    values = {**values, **{k.replace("__", "."): v for k, v in extra.items()}}
    return [f"{k}={orjson.dumps(v).decode()}" for k, v in values.items()]


def tiny_overrides(**extra: object) -> list[str]:
    """--set overrides for a seconds-long CPU run on real ARC tasks."""
    return as_overrides(TINY, **extra)


def as_torchrun_rank(rank: int, world: int, port: int) -> None:
    """This process as torchrun starts rank ``rank`` of ``world`` (its variables), one thread."""
    import os

    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
