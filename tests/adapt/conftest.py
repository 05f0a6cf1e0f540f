"""The tiny trained base and the helpers the adaptation tests share."""

import dataclasses

import pytest
import torch

from arcdiff.adapt import adapt, lora_config
from arcdiff.config import load_config
from arcdiff.data.dataset import TrainingStream
from arcdiff.data.tasks import TaskSet, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.runs.checkpoint import load_run
from arcdiff.train.step import diffusion_loss
from arcdiff.train.trainer import train
from tests.conftest import SMALL_TASKS, tiny_overrides

KNOWN, NEW = SMALL_TASKS[4], SMALL_TASKS[5]  # the base trains on SMALL_TASKS[:5]
CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    cfg = load_config(None, tiny_overrides(data__ids=SMALL_TASKS[:5], train__threads=1))
    run = tmp_path_factory.mktemp("lora") / "base"
    train(cfg, run, device=CPU, progress=False)
    return run


@pytest.fixture(scope="session")
def tasks():
    return load_tasks("aa1:train", ids=[KNOWN, NEW], max_size=5)


def config(base, mode, steps=3):
    return lora_config(base, None, [f"lora.mode={mode}", f"lora.steps={steps}", "lora.rank=4"])


def adapted_for(base_dir, tasks, mode, tmp_path, steps=3):
    base = load_run(base_dir)
    cfg = config(base, mode, steps)
    return base, cfg, adapt(base, tasks.tasks, cfg, tmp_path / "log", device=CPU, progress=False)


def a_batch(base, adapted, tasks):
    stream = TrainingStream(TaskSet("", (), {}), tasks.tasks, max_size=5, seed=3)
    batch = stream.sample(8)
    rows = torch.tensor([adapted.task_index[t.id] for t in tasks])
    return dataclasses.replace(batch, task=rows[batch.task])


def logits_of(adapted, batch, task_id=None):
    """Colour and size logits of a fixed noisy batch (per-task: with ``task_id``'s adapter)."""
    if task_id is not None:
        adapted.use_task(task_id)
    gen = torch.Generator().manual_seed(0)
    steps = torch.full((len(batch),), 40)
    diffusion = DiscreteDiffusion.from_config(load_config(None).diffusion)
    with torch.no_grad():
        _, _, out = diffusion_loss(adapted.model, batch, diffusion, steps, gen, 0.1, True)
    return out.logits, out.size_logits
