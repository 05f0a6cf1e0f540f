"""Adapter folders on disk: save, merge into a run directory, find, and load onto the base.

An adapter directory (``RUN/lora/<name>/``) holds:

    lora.json                     mode, base checkpoint and step, the task id of every row
    config.json                   resolved config; eval.split is the adapted source
    adapter_config.json, adapter_model.safetensors    peft's own format (shared)
    tasks/<task id>/adapter_*     one peft adapter per task (per-task)
    task_embeddings.safetensors   "new_rows": the new tasks' rows, in lora.json's order
    model.safetensors             every weight (full)
    metrics.jsonl, scores.json    the training log; test and demonstration scores
    merged/                       with --merge: a run directory `arcdiff evaluate` reads as any
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import peft
import torch
from peft.utils import load_peft_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from arcdiff.adapt.model import Adapted, TaskRows, plain_rows, prepare
from arcdiff.config import Config, config_to_dict, load_config, save_config
from arcdiff.data.tasks import Task
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.eval.evaluate import EvalModel
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import (
    LoadedRun,
    checkpoint_state,
    load_run,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.runs.paths import checkpoint_path, code_version, select_device, write_json

MANIFEST = "lora.json"
MERGE_PER_TASK = (
    "--merge: per-task adapters differ per task, so they do not merge into one model; "
    "evaluate them with `arcdiff evaluate --adapter NAME`"
)


def _task_dirs(task_ids: Sequence[str]) -> dict[str, str]:
    """Per-task adapter folders, ``tasks/<id>`` with characters other than [\\w.-] replaced."""
    dirs = {t: "tasks/" + re.sub(r"[^\w.-]", "_", t).lstrip(".") for t in task_ids}
    if len(set(dirs.values())) < len(dirs):
        dirs = {t: f"tasks/{k:05d}" for k, t in enumerate(task_ids)}
    return dirs


def adapter_run_config(cfg: Config, source: str, tasks: Sequence[Task]) -> Config:
    """An adapter's own config: its tasks are the adapted ones, its default split their source."""
    ids = [t.id for t in tasks]
    return replace(cfg, data=replace(cfg.data, ids=ids), eval=replace(cfg.eval, split=source))


def save_adapted(
    adapted: Adapted,
    out_dir: Path,
    cfg: Config,
    base: LoadedRun,
    *,
    source: str,
    tasks: Sequence[Task],
    train_s: float,
) -> None:
    """Write the adapter (peft format), the new rows, config.json and lora.json to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(adapter_run_config(cfg, source, tasks), out_dir / "config.json")
    manifest: dict[str, Any] = {
        "mode": adapted.mode,
        "base_run": str(base.run_dir),
        "base_checkpoint": base.checkpoint,
        "base_step": base.step,
        "base_tasks": adapted.num_base,
        "task_ids": adapted.task_ids,
        "tasks": [t.id for t in tasks],
        "source": source,
        "steps": cfg.lora.steps,
        "train_s": train_s,
        "code_version": code_version(),
    }
    if adapted.mode == "full":
        state = {k: v.detach().contiguous() for k, v in adapted.model.state_dict().items()}
        save_file(state, out_dir / "model.safetensors")
    else:
        rows = adapted.model.task_embed
        assert isinstance(rows, TaskRows)
        save_file(
            {"new_rows": rows.new_rows.detach().contiguous()},
            out_dir / "task_embeddings.safetensors",
        )
    if adapted.mode == "shared":
        assert adapted.peft_model is not None
        adapted.peft_model.save_pretrained(str(out_dir))
    if adapted.mode == "per-task":
        assert adapted.peft_model is not None
        dirs = _task_dirs(list(adapted.adapters))
        for task_id, folder in dirs.items():
            adapted.use_task(task_id)
            adapted.peft_model.save_pretrained(str(out_dir / folder))
        manifest["adapters"] = dirs
    write_json(out_dir / MANIFEST, manifest)


def save_merged(adapted: Adapted, out_dir: Path, cfg: Config, base: LoadedRun) -> Path:
    """A run directory whose checkpoint has the adapter merged in: ``arcdiff evaluate --run``."""
    if adapted.mode == "per-task":
        raise ConfigError(MERGE_PER_TASK)
    model = adapted.model
    if adapted.peft_model is not None:
        model = adapted.peft_model.merge_and_unload()
        adapted.peft_model = None  # the LoRA layers are folded into the linears now
    state = {k: v.detach().clone() for k, v in plain_rows(model).state_dict().items()}
    checkpoint = checkpoint_state(
        model=state,
        ema=state,  # one dict: its tensors are saved once
        config=config_to_dict(cfg),
        step=base.step,
        model_args={"num_tasks": len(adapted.task_ids), "max_size": cfg.data.max_size},
        task_ids=adapted.task_ids,
        num_params=sum(v.numel() for v in state.values()),
        adapted_from={"run": str(base.run_dir), "checkpoint": base.checkpoint},
    )
    save_config(cfg, out_dir / "config.json")
    save_checkpoint(checkpoint_path(out_dir, "final"), checkpoint)
    return out_dir


def find_adapter(run_dir: Path, name: str) -> Path:
    """``RUN/lora/NAME``, or NAME itself when it is an adapter directory."""
    for path in (run_dir / "lora" / name, Path(name)):
        if (path / MANIFEST).is_file():
            return path
    found = sorted(p.parent.name for p in (run_dir / "lora").glob(f"*/{MANIFEST}"))
    raise CheckpointError(
        f"{run_dir}: no adapter '{name}' in {run_dir / 'lora'} "
        f"(adapters there: {', '.join(found) or 'none'}; `arcdiff lora` makes one)"
    )


def _read_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    # safetensors raises several types; a truncated header is its own SafetensorError
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _attach_peft(model: Denoiser, folder: Path) -> peft.PeftModel:
    try:
        return peft.PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError, RuntimeError) as e:  # peft reports shape mismatches so
        raise CheckpointError(
            f"{folder}: adapter does not load ({type(e).__name__}: {e})"
        ) from None


@dataclass(frozen=True)
class LoadedAdapter:
    adapted: Adapted
    cfg: Config
    path: Path
    manifest: dict[str, Any]


def load_adapted(run_dir: Path, name: str, *, device: torch.device | None = None) -> LoadedAdapter:
    """An adapter saved by :func:`save_adapted` on top of its base run, ready to predict."""
    path = find_adapter(run_dir, name)
    manifest = orjson.loads((path / MANIFEST).read_bytes())
    base = load_run(run_dir, manifest["base_checkpoint"])
    num_base, task_ids = manifest["base_tasks"], manifest["task_ids"]
    if base.task_ids != task_ids[:num_base] or base.step != manifest["base_step"]:
        raise CheckpointError(
            f"{path}: adapted from {run_dir}/checkpoints/{base.checkpoint}.pt at step "
            f"{manifest['base_step']} with {num_base} tasks, but that checkpoint now holds step "
            f"{base.step} with {len(base.task_ids)} tasks"
        )
    cfg = load_config(path / "config.json")
    mode = manifest["mode"]
    adapted = prepare(base, task_ids, cfg.lora, "full" if mode == "full" else "none")
    adapted.mode = mode
    model = adapted.model
    if mode == "full":
        load_state_strict(model, _read_tensors(path / "model.safetensors"), str(path))
    else:
        new_rows = _read_tensors(path / "task_embeddings.safetensors").get("new_rows")
        rows = model.task_embed
        assert isinstance(rows, TaskRows)
        if new_rows is None or new_rows.shape != rows.new_rows.shape:
            raise CheckpointError(
                f"{path}: task_embeddings.safetensors does not hold the {len(task_ids) - num_base}"
                f" new rows of width {rows.new_rows.shape[1]} that lora.json lists"
            )
        rows.new_rows.data.copy_(new_rows)
    if mode == "shared":
        adapted.peft_model = _attach_peft(model, path)
    if mode == "per-task":
        dirs = manifest["adapters"]
        adapted.peft_model = _attach_peft(model, path / next(iter(dirs.values())))
        adapted.adapters = {t: load_peft_weights(str(path / d)) for t, d in dirs.items()}
    model.requires_grad_(False).eval().to(device or select_device())
    return LoadedAdapter(adapted, cfg, path, manifest)


def adapter_eval_model(run_dir: Path, name: str, *, device: torch.device) -> EvalModel:
    """``arcdiff evaluate --adapter NAME``: the base run with the adapter, for evaluate_run,
    scoring into the adapter's own ``eval/`` (the base run's files stay as they are)."""
    loaded = load_adapted(run_dir, name, device=device)
    return EvalModel(
        predict=loaded.adapted.predict,
        cfg=loaded.cfg,
        task_ids=loaded.adapted.task_ids,
        step=loaded.manifest["base_step"],
        out_root=loaded.path,
        adapter=name,
    )
