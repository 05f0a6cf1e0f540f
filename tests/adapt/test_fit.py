"""Training an adaptation: what trains, what stays bit-identical."""

import pytest
import torch

from arcdiff.data.tasks import load_tasks
from arcdiff.runs.checkpoint import load_run
from tests.adapt.conftest import CPU, KNOWN, NEW, a_batch, adapted_for, logits_of


@pytest.mark.parametrize("mode", ["shared", "per-task", "embeddings-only"])
def test_adaptation_leaves_the_base_weights_bit_identical(base_dir, tasks, mode, tmp_path):
    before = {k: v.clone() for k, v in load_run(base_dir).model.state_dict().items()}
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


def _log(folder):
    import orjson

    return [orjson.loads(line) for line in (folder / "metrics.jsonl").read_bytes().splitlines()]


def test_a_clock_budget_fixes_the_horizon_and_stops_in_time(base_dir, tasks, tmp_path):
    import time

    from arcdiff.adapt import adapt, lora_config

    base = load_run(base_dir)
    cfg = lora_config(base, None, ["lora.mode=full", "lora.steps=100000"])
    start = time.monotonic()
    adapted = adapt(base, tasks.tasks, cfg, tmp_path, progress=False, budget_s=2.0)
    assert time.monotonic() - start < 2.0 + 5  # a step of this model takes milliseconds
    rows = _log(tmp_path)
    (fixed,) = [r for r in rows if "horizon_steps" in r]  # once, at the end of the warmup
    assert fixed["step"] == 3 and fixed["horizon_steps"] < 100000
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert 10 < adapted.steps == len(lrs)
    assert lrs[:4] == sorted(lrs[:4]) and lrs[3:] == sorted(lrs[3:], reverse=True)
    past = lrs[fixed["horizon_steps"] :]  # steps faster than the first ones: the floor rate
    assert all(lr == pytest.approx(min(lrs)) for lr in past)


def test_embeddings_first_trains_the_new_rows_alone_then_every_weight(base_dir, tasks, tmp_path):
    from torch.nn.modules.module import register_module_forward_hook

    from arcdiff.adapt import adapt, lora_config
    from arcdiff.model.denoiser import Denoiser

    base = load_run(base_dir)
    cfg = lora_config(base, None, ["lora.mode=full", "lora.steps=8", "lora.embed_first=0.5"])
    seen = []  # per training forward: (rows train, a block's weight trains)

    def watch(module, args, out):
        if isinstance(module, Denoiser) and module.training:
            block = next(module.blocks.parameters())
            seen.append((module.task_embed.weight.requires_grad, block.requires_grad))

    handle = register_module_forward_hook(watch)
    try:
        adapted = adapt(base, tasks.tasks, cfg, tmp_path, progress=False)
    finally:
        handle.remove()
    assert [r["task"] for r in _log(tmp_path)] == ["full rows"] * 4 + ["full"] * 4
    first = seen.count((True, False))
    assert first > 0 and seen == [(True, False)] * first + [(True, True)] * (len(seen) - first)
    before = base.model.state_dict()
    changed = [k for k, v in adapted.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "task_embed.weight" in changed and len(changed) > 5  # the second stage trains all


def test_without_augmentation_the_stream_shows_the_demonstrations_as_they_are(
    base_dir, tasks, tmp_path
):
    from arcdiff.adapt import adapt, lora_config

    base = load_run(base_dir)
    on = lora_config(base, None, ["lora.mode=full", "lora.steps=3"])
    off = lora_config(base, None, ["lora.mode=full", "lora.steps=3", "lora.augment=false"])
    a = adapt(base, tasks.tasks, on, tmp_path / "on", progress=False)
    b = adapt(base, tasks.tasks, off, tmp_path / "off", progress=False)
    assert off.lora.augment is False
    w = "blocks.0.mlp.fc1.weight"
    assert not torch.equal(a.model.state_dict()[w], b.model.state_dict()[w])


def _training_batch_sizes(run) -> set[int]:
    """The batch sizes of the denoiser's training forwards while ``run()`` runs."""
    from torch.nn.modules.module import register_module_forward_hook

    from arcdiff.model.denoiser import Denoiser

    seen: set[int] = set()

    def watch(module, args, out):
        if isinstance(module, Denoiser) and module.training:
            seen.add(args[0].shape[0])  # inputs (B, S, S)

    handle = register_module_forward_hook(watch)
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_adaptation_accumulates_gradients_as_training_does(base_dir, tasks, tmp_path):
    from functools import partial

    from arcdiff.adapt import adapt, lora_config
    from arcdiff.errors import TrainingError

    base = load_run(base_dir)
    sets = ["lora.mode=full", "lora.steps=2", "lora.batch_size=8"]
    for accum, micro in ((1, 8), (2, 4)):
        cfg = lora_config(base, None, [*sets, f"train.grad_accum={accum}"])
        run = partial(adapt, base, tasks.tasks, cfg, tmp_path / str(accum), progress=False)
        assert _training_batch_sizes(run) == {micro}  # train.grad_accum micro-batches a step
    odd = lora_config(base, None, [*sets, "lora.batch_size=3", "train.grad_accum=2"])
    with pytest.raises(TrainingError, match=r"lora.batch_size=3 is not divisible by train"):
        adapt(base, tasks.tasks, odd, tmp_path / "odd", progress=False)


def test_adaptation_autocasts_to_cpu_bf16_as_training_does(base_dir, tasks, tmp_path, monkeypatch):
    """train.cpu_bf16 reaches the adaptation's step: refused where the CPU lacks the flags
    (as the trainer refuses it), bf16 forwards where it has them (claimed here: this CPU's
    bf16 may be emulated, which is slow but exact enough for two steps)."""
    from torch.nn.modules.module import register_module_forward_hook

    from arcdiff.adapt import adapt, lora_config
    from arcdiff.errors import ConfigError
    from arcdiff.model.denoiser import Denoiser
    from arcdiff.runs import device as device_module

    base = load_run(base_dir)
    cfg = lora_config(base, None, ["lora.mode=full", "lora.steps=2", "train.cpu_bf16=true"])
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "avx2"})
    with pytest.raises(ConfigError, match=r"train.cpu_bf16: this CPU has neither AMX nor AVX512"):
        adapt(base, tasks.tasks, cfg, tmp_path / "refused", device=CPU, progress=False)
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "amx_bf16"})
    seen: list[torch.dtype] = []

    def watch(module, args, out):
        if isinstance(module, Denoiser) and module.training:
            seen.append(out.logits.dtype)

    handle = register_module_forward_hook(watch)
    try:
        adapt(base, tasks.tasks, cfg, tmp_path / "bf16", device=CPU, progress=False)
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}  # every training forward, under autocast
