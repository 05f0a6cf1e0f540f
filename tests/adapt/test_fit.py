"""Training an adaptation: what trains, what stays bit-identical."""

import pytest
import torch

from arcdiff.adapt import load_base
from arcdiff.data.tasks import load_tasks
from tests.adapt.conftest import KNOWN, NEW, a_batch, adapted_for, logits_of


@pytest.mark.parametrize("mode", ["shared", "per-task", "embeddings-only"])
def test_adaptation_leaves_the_base_weights_bit_identical(base_dir, tasks, mode, tmp_path):
    before = {k: v.clone() for k, v in load_base(base_dir).model.state_dict().items()}
    base, _, adapted = adapted_for(base_dir, tasks, mode, tmp_path)
    for name, value in base.model.state_dict().items():  # the base model object itself
        assert torch.equal(value, before[name]), name
    state = adapted.model.state_dict()
    frozen = {k.replace("base_layer.", ""): v for k, v in state.items() if "lora_" not in k}
    rows = frozen.pop("task_embed.base_rows")
    new_rows = frozen.pop("task_embed.new_rows")
    assert torch.equal(rows, before.pop("task_embed.weight"))
    assert frozen.keys() == before.keys()
    for name, value in frozen.items():
        assert torch.equal(value, before[name]), name
    # and the adaptation did train something
    assert not torch.allclose(new_rows[0], rows.mean(0))
    if mode != "embeddings-only":
        assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)


def test_per_task_adapters_differ_by_task(base_dir, tasks, tmp_path):
    base, _, adapted = adapted_for(base_dir, tasks, "per-task", tmp_path)
    a, b = (adapted.adapters[t] for t in (KNOWN, NEW))
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)
    batch = a_batch(base, adapted, tasks)
    assert not torch.equal(logits_of(adapted, batch, KNOWN)[0], logits_of(adapted, batch, NEW)[0])


def test_with_one_task_shared_and_per_task_train_the_same_weights(base_dir, tmp_path):
    one = load_tasks("aa1:train", ids=[NEW], max_size=5)
    _, _, shared = adapted_for(base_dir, one, "shared", tmp_path / "s")
    _, _, per_task = adapted_for(base_dir, one, "per-task", tmp_path / "p")
    per_task.use_task(NEW)
    a, b = shared.model.state_dict(), per_task.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
