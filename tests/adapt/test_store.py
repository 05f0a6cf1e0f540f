"""Adapter folders: save/load, merge, and bad or stale files."""

import dataclasses
import shutil

import orjson
import pytest
import torch

from arcdiff.adapt import find_adapter, load_adapted, save_adapted, save_merged
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.runs.checkpoint import load_checkpoint, load_run, load_run_model, save_checkpoint
from tests.adapt.conftest import CPU, KNOWN, NEW, a_batch, adapted_for, logits_of


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


def test_bad_bases_and_missing_adapters_are_checkpoint_errors(base_dir, tasks, tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoints/final.pt"):
        load_run(tmp_path / "empty")
    other = tmp_path / "other"
    shutil.copytree(base_dir, other, ignore=shutil.ignore_patterns("lora"))
    state = load_checkpoint(other / "checkpoints" / "final.pt")
    state["config"]["model"]["n_layers"] = 2  # weights of one block, a config of two
    save_checkpoint(other / "checkpoints" / "final.pt", state)
    with pytest.raises(CheckpointError, match=r"parameter 'blocks.1.attn.proj.weight' is missing"):
        load_run(other)
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
