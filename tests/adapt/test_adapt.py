"""LoRA adaptation to unseen tasks: what trains, what stays, save/load/merge, bad input."""

import dataclasses
import shutil

import orjson
import pytest
import torch

from arcdiff.adapt import (
    adapt,
    adapted_task_ids,
    expanded_model,
    find_adapter,
    load_adapted,
    load_base,
    lora_config,
    prepare,
    run_lora,
    save_adapted,
    save_merged,
)
from arcdiff.config import load_config
from arcdiff.data.dataset import TrainingStream
from arcdiff.data.tasks import TaskSet, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, ConfigError, DataError
from arcdiff.runs.checkpoint import load_checkpoint, load_run_model, save_checkpoint
from arcdiff.train.step import diffusion_loss
from arcdiff.train.trainer import train
from tests.conftest import SMALL_TASKS, tiny_overrides

KNOWN, NEW = SMALL_TASKS[4], SMALL_TASKS[5]  # the base trains on SMALL_TASKS[:5]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    cfg = load_config(None, tiny_overrides(data__ids=SMALL_TASKS[:5], train__threads=1))
    run = tmp_path_factory.mktemp("lora") / "base"
    train(cfg, run, device=CPU, progress=False)
    return run


@pytest.fixture(scope="module")
def tasks():
    return load_tasks("aa1:train", ids=[KNOWN, NEW], max_size=5)


def config(base, mode, steps=3):
    return lora_config(base, None, [f"lora.mode={mode}", f"lora.steps={steps}", "lora.rank=4"])


def adapted_for(base_dir, tasks, mode, tmp_path, steps=3):
    base = load_base(base_dir)
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


def test_new_rows_start_at_the_mean_and_known_tasks_keep_theirs(base_dir, tasks):
    base = load_base(base_dir)
    ids = adapted_task_ids(base.task_ids, tasks.tasks)
    assert ids == [*SMALL_TASKS[:5], NEW]  # KNOWN keeps its row; NEW is appended
    rows = expanded_model(base, ids).task_embed.weight
    trained = base.model.task_embed.weight
    assert torch.equal(rows[:5], trained)
    assert torch.allclose(rows[5], trained.mean(0)) and not torch.allclose(rows[5], trained[0])


@pytest.mark.parametrize("mode", ["shared", "per-task", "embeddings-only"])
def test_only_lora_weights_and_new_rows_get_gradients(base_dir, tasks, mode):
    base = load_base(base_dir)
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


@pytest.mark.parametrize("mode", ["shared", "per-task", "embeddings-only", "full"])
def test_save_then_load_gives_identical_predictions(base_dir, tasks, mode, tmp_path):
    base, cfg, adapted = adapted_for(base_dir, tasks, mode, tmp_path)
    save_adapted(
        adapted,
        tmp_path / "lora" / "a",
        cfg,
        base,
        source="aa1:train",
        tasks=tasks.tasks,
        train_s=0,
    )
    loaded = load_adapted(base_dir, str(tmp_path / "lora" / "a"), device=CPU)
    assert loaded.adapted.task_ids == adapted.task_ids and loaded.adapted.mode == mode
    batch = a_batch(base, adapted, tasks)
    for task_id in (KNOWN, NEW) if mode == "per-task" else (None,):
        expected = logits_of(adapted, batch, task_id)
        for a, b in zip(expected, logits_of(loaded.adapted, batch, task_id), strict=True):
            assert torch.equal(a, b)
    diffusion = DiscreteDiffusion.from_config(base.cfg.diffusion)
    settings = {"num_steps": 4, "maj": True, "num_augs": 2}
    first = adapted.predict(diffusion, tasks.tasks, **settings)
    again = loaded.adapted.predict(diffusion, tasks.tasks, **settings)
    for task_id in first:
        for p, q in zip(first[task_id], again[task_id], strict=True):
            assert p.attempt_1.tobytes() == q.attempt_1.tobytes()
            assert p.attempt_2.tobytes() == q.attempt_2.tobytes()


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


@pytest.mark.parametrize("mode", ["shared", "embeddings-only", "full"])
def test_the_merged_model_matches_the_adapter(base_dir, tasks, mode, tmp_path):
    base, cfg, adapted = adapted_for(base_dir, tasks, mode, tmp_path)
    batch = a_batch(base, adapted, tasks)
    expected = logits_of(adapted, batch)
    save_merged(adapted, tmp_path / "merged", cfg, base)
    model, merged_cfg, state = load_run_model(tmp_path / "merged" / "checkpoints" / "final.pt")
    assert state["task_ids"] == adapted.task_ids and merged_cfg == cfg
    assert type(model.task_embed) is torch.nn.Embedding
    merged = dataclasses.replace(adapted, mode="none", model=model, peft_model=None)
    for a, b in zip(expected, logits_of(merged, batch), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_merging_per_task_adapters_is_a_config_error(base_dir, tasks, tmp_path):
    base, cfg, adapted = adapted_for(base_dir, tasks, "per-task", tmp_path)
    with pytest.raises(ConfigError, match="per-task adapters differ per task"):
        save_merged(adapted, tmp_path / "merged", cfg, base)


def test_a_config_that_does_not_match_the_base_is_a_checkpoint_error(base_dir, tmp_path):
    base = load_base(base_dir)
    path = tmp_path / "lora_wide.json"
    path.write_bytes(orjson.dumps({"model": {"d_model": 64}, "lora": {"rank": 2}}))
    with pytest.raises(CheckpointError, match=r"model.d_model: expected 32, found 64"):
        lora_config(base, path)
    with pytest.raises(CheckpointError, match=r"data.max_size: expected 5, found 10"):
        lora_config(base, None, ["data.max_size=10"])
    matching = tmp_path / "lora_ok.json"
    matching.write_bytes(orjson.dumps({"model": {"d_model": 32}, "lora": {"rank": 2}}))
    cfg = lora_config(base, matching, ["lora.steps=7"])
    assert (cfg.lora.rank, cfg.lora.steps, cfg.name) == (2, 7, "lora_ok")
    assert cfg.model == base.cfg.model and cfg.data == base.cfg.data


def test_config_typos_are_config_errors(base_dir, tasks, tmp_path):
    base = load_base(base_dir)
    path = tmp_path / "typo.json"
    path.write_bytes(orjson.dumps({"lora": {"rnak": 4}}))
    with pytest.raises(ConfigError, match="unknown key 'lora.rnak' \\(did you mean 'rank'\\?\\)"):
        lora_config(base, path)
    with pytest.raises(ConfigError, match="lora.mode"):
        lora_config(base, None, ["lora.mode=perTask"])
    cfg = lora_config(base, None, ['lora.target_modules=["qkv", "fc3"]'])
    with pytest.raises(ConfigError, match=r"no linear layer named fc3 .*qkv"):
        prepare(base, base.task_ids, cfg.lora, "shared")


def test_bad_bases_and_missing_adapters_are_checkpoint_errors(base_dir, tasks, tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        load_base(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoints/final.pt"):
        load_base(tmp_path / "empty")
    other = tmp_path / "other"
    shutil.copytree(base_dir, other, ignore=shutil.ignore_patterns("lora"))
    state = load_checkpoint(other / "checkpoints" / "final.pt")
    state["config"]["model"]["n_layers"] = 2  # weights of one block, a config of two
    save_checkpoint(other / "checkpoints" / "final.pt", state)
    with pytest.raises(CheckpointError, match=r"parameter 'blocks.1.attn.proj.weight' is missing"):
        load_base(other)
    with pytest.raises(CheckpointError, match=r"no adapter 'nope' .*adapters there: none"):
        find_adapter(base_dir, "nope")


def test_an_adapter_of_an_older_base_checkpoint_is_refused(base_dir, tasks, tmp_path):
    base, cfg, adapted = adapted_for(base_dir, tasks, "embeddings-only", tmp_path)
    folder = tmp_path / "lora" / "emb"
    save_adapted(adapted, folder, cfg, base, source="aa1:train", tasks=tasks.tasks, train_s=0)
    manifest = orjson.loads((folder / "lora.json").read_bytes())
    (folder / "lora.json").write_bytes(orjson.dumps({**manifest, "base_step": 3}))
    with pytest.raises(CheckpointError, match="at step 3 .* now holds step 6"):
        load_adapted(base_dir, str(folder))


def test_a_corrupt_adapter_file_is_a_checkpoint_error(base_dir, tasks, tmp_path):
    base, cfg, adapted = adapted_for(base_dir, tasks, "embeddings-only", tmp_path)
    folder = tmp_path / "lora" / "emb"
    save_adapted(adapted, folder, cfg, base, source="aa1:train", tasks=tasks.tasks, train_s=0)
    rows = folder / "task_embeddings.safetensors"
    rows.write_bytes(rows.read_bytes()[:40])  # a truncated file
    with pytest.raises(CheckpointError, match=r"task_embeddings.safetensors: unreadable"):
        load_adapted(base_dir, str(folder))


def test_a_task_without_a_per_task_adapter_is_a_data_error(base_dir, tasks, tmp_path):
    _, _, adapted = adapted_for(base_dir, tasks, "per-task", tmp_path)
    adapted.use_task(NEW)  # adapted to: fine
    with pytest.raises(DataError, match=f"task {SMALL_TASKS[0]} has no per-task adapter"):
        adapted.use_task(SMALL_TASKS[0])


def test_an_adapter_name_never_replaces_a_folder_that_is_not_an_adapter(base_dir, tmp_path):
    base = load_base(base_dir)
    cfg = config(base, "embeddings-only")
    out = tmp_path / "adapters"
    (out / "emb").mkdir(parents=True)
    (out / "emb" / "notes.txt").write_text("mine")
    args = {"modes": ["embeddings-only"], "out": out, "ids": [NEW], "device": CPU}
    with pytest.raises(CheckpointError, match=r"emb: exists and is not an adapter"):
        run_lora(base, cfg, "aa1:train", names=["emb"], evaluate=False, progress=False, **args)
    assert (out / "emb" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="'baseline' is where the baseline's scores go"):
        run_lora(base, cfg, "aa1:train", names=["baseline"], progress=False, **args)
