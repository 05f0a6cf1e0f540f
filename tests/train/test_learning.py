"""Learning must be real: a small model learns an ARC task from its demonstrations alone."""

import torch

from arcdiff.config import load_config
from arcdiff.data.encode import decode_grids, encode_grids
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.sample import sample
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.logging import read_metrics
from arcdiff.train.trainer import train
from tests.conftest import tiny_overrides

TASK = "3c9b0459"  # aa1:train, 3x3 grids rotated by 180 degrees


def solved(model, task, truths):
    """Per grid: does the deterministic 8-step sampler reproduce the truth?"""
    grids = [p.input for p in task.demos] + list(task.test_inputs)
    inputs, _ = encode_grids(grids, 3)
    n = len(grids)
    zeros = torch.zeros(n, dtype=torch.long)
    out = sample(
        model, DiscreteDiffusion(), torch.from_numpy(inputs).long(), zeros, zeros, num_steps=8
    )
    predicted = decode_grids(out.tokens.numpy(), out.sizes.numpy())
    return [
        p.shape == t.shape and bool((p == t).all()) for p, t in zip(predicted, truths, strict=True)
    ]


def test_a_small_model_learns_a_task_from_its_demonstrations(tmp_path):
    # the task enters as an eval-split source: the model trains on its 4 demonstrations only
    overrides = tiny_overrides(
        data__train_sources=[],
        data__eval_sources=["aa1:train"],
        data__ids=[TASK],
        data__max_size=3,
        data__val_pairs=0,
        model__d_model=64,
        model__n_heads=4,
        model__n_layers=1,  # one layer at lr 4e-3 solves it in 200 steps (2 layers: 300 at 3e-3)
        train__batch_size=32,
        train__lr=4e-3,  # 3e-3 and 5e-3 solve it too; 150 steps do not
        train__warmup_steps=20,
        train__max_steps=200,
        train__eval_every=1000,
        train__ema_decay=0.9,
    )
    cfg = load_config(None, overrides)
    tasks = load_tasks("aa1:train", ids=[TASK])
    task = tasks[TASK]
    truths = [p.output for p in task.demos] + list(tasks.solutions[TASK])

    torch.manual_seed(cfg.train.seed)
    untrained = build_model(cfg, num_tasks=1)
    assert not any(solved(untrained, task, truths))

    result = train(cfg, tmp_path / "run", device=torch.device("cpu"), progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert losses[0] > 2.0 and sum(losses[-10:]) / 10 < losses[0] / 100
    assert solved(result.ema, task, truths) == [True] * 5  # 4 demonstrations + the unseen test
