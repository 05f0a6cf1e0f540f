"""The adapted model: new task rows, what gets gradients, per-task adapters."""

import pytest
import torch

from arcdiff.adapt import adapted_task_ids, expanded_model, prepare
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import DataError
from arcdiff.runs.checkpoint import load_run
from arcdiff.train.step import diffusion_loss
from tests.adapt.conftest import NEW, a_batch, adapted_for, config
from tests.conftest import SMALL_TASKS


def test_new_rows_start_at_the_mean_and_known_tasks_keep_theirs(base_dir, tasks):
    base = load_run(base_dir)
    ids = adapted_task_ids(base.task_ids, tasks.tasks)
    assert ids == [*SMALL_TASKS[:5], NEW]  # KNOWN keeps its row; NEW is appended
    rows = expanded_model(base, ids).task_embed.weight
    trained = base.model.task_embed.weight
    assert torch.equal(rows[:5], trained)
    assert torch.allclose(rows[5], trained.mean(0)) and not torch.allclose(rows[5], trained[0])


@pytest.mark.parametrize("mode", ["shared", "per-task", "embeddings-only"])
def test_only_lora_weights_and_new_rows_get_gradients(base_dir, tasks, mode):
    base = load_run(base_dir)
    adapted = prepare(
        base, adapted_task_ids(base.task_ids, tasks.tasks), config(base, mode).lora, mode
    )
    batch = a_batch(base, adapted, tasks)
    adapted.model.train()
    diffusion = DiscreteDiffusion.from_config(base.cfg.diffusion)
    loss, _, _ = diffusion_loss(
        adapted.model, batch, diffusion, torch.full((8,), 60), torch.Generator(), 0.1, True
    )
    loss.backward()
    named = dict(adapted.model.named_parameters())
    with_grad = {n for n, p in named.items() if p.grad is not None}
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert with_grad == trainable
    lora = {n for n in with_grad if ".lora_A." in n or ".lora_B." in n}
    assert with_grad - lora == {"task_embed.new_rows"}
    if mode == "embeddings-only":
        assert not lora
    else:  # one A and one B per adapted linear: qkv, proj, fc1, fc2 in the one block
        # B starts at zero, so only B has a non-zero gradient at the first step
        assert len(lora) == 8 and all(named[n].grad.abs().sum() > 0 for n in lora if "lora_B" in n)


def test_a_task_without_a_per_task_adapter_is_a_data_error(base_dir, tasks, tmp_path):
    _, _, adapted = adapted_for(base_dir, tasks, "per-task", tmp_path)
    adapted.use_task(NEW)  # adapted to: fine
    with pytest.raises(DataError, match=f"task {SMALL_TASKS[0]} has no per-task adapter"):
        adapted.use_task(SMALL_TASKS[0])
