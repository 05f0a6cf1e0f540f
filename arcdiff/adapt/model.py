"""The adapted model: the base run's denoiser with rows for new tasks and, in the LoRA modes,
peft adapters on its linears. Only ``mode``'s weights train; the base weights stay frozen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import peft
import torch
import torch.nn.functional as F
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from rich.progress import Progress
from torch import Tensor, nn

from arcdiff.adapt.config import LORA_MODES
from arcdiff.config import LoraConfig
from arcdiff.data.tasks import Task
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import ConfigError, DataError
from arcdiff.eval.predict import predict_tasks
from arcdiff.eval.score import Predictions
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import LoadedRun, build_model, load_state_strict


class TaskRows(nn.Module):
    """``task_embed`` while adapting: the base run's rows, frozen, then trainable new rows."""

    def __init__(self, weight: Tensor, num_base: int):
        super().__init__()
        self.register_buffer("base_rows", weight[:num_base].detach().clone())
        self.new_rows = nn.Parameter(weight[num_base:].detach().clone())

    @property
    def weight(self) -> Tensor:
        return torch.cat([self.base_rows, self.new_rows])  # (T, D)

    def forward(self, task: Tensor) -> Tensor:
        return F.embedding(task, self.weight)


def adapted_task_ids(base_ids: Sequence[str], tasks: Sequence[Task]) -> list[str]:
    """The task id of every row: the base run's, then each new task's (known ones keep theirs)."""
    known = set(base_ids)
    return [*base_ids, *dict.fromkeys(t.id for t in tasks if t.id not in known)]


def expanded_model(base: LoadedRun, task_ids: Sequence[str]) -> Denoiser:
    """A copy of the base model with a row for every id past the base's: the trained rows' mean."""
    state = dict(base.model.state_dict())
    rows = state["task_embed.weight"]  # (T_base, D)
    extra = len(task_ids) - len(base.task_ids)
    state["task_embed.weight"] = torch.cat([rows, rows.mean(0, keepdim=True).expand(extra, -1)])
    model = build_model(base.cfg, len(task_ids))
    load_state_strict(model, state, f"{base.run_dir} ({base.checkpoint}.pt)")
    return model


def plain_rows(model: Denoiser) -> Denoiser:
    """Back to one ``nn.Embedding`` of task rows, as a freshly built Denoiser has."""
    weight = model.task_embed.weight.detach().clone()
    model.task_embed = nn.Embedding.from_pretrained(weight, freeze=False)
    return model


def peft_config(cfg: LoraConfig) -> peft.LoraConfig:
    return peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )


def check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    """Every ``lora.target_modules`` name must be a linear layer of ``model``: a ConfigError."""
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})
    missing = [t for t in targets if t not in linear]
    if missing or not targets:
        raise ConfigError(
            f"lora.target_modules: no linear layer named {', '.join(missing) or '(none given)'} "
            f"in the model (its linear layers: {', '.join(linear)})"
        )


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def adapter_state(model: peft.PeftModel) -> dict[str, Tensor]:
    """A copy of the adapter's weights (peft's state dict of the LoRA layers)."""
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


@dataclass
class Adapted:
    """A base model with rows for new tasks and, in the LoRA modes, peft adapters."""

    mode: str  # a lora.mode, or "none": the untrained baseline
    model: Denoiser  # peft injects its LoRA layers into this module in place
    task_ids: list[str]  # every row: the base run's, then the new tasks'
    num_base: int
    peft_model: peft.PeftModel | None = None
    adapters: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # per-task weights
    steps: int = 0  # optimiser steps it trained, over every task

    @property
    def task_index(self) -> dict[str, int]:
        return {task_id: i for i, task_id in enumerate(self.task_ids)}

    def use_task(self, task_id: str) -> None:
        """Per-task mode: put ``task_id``'s adapter into the model (a no-op otherwise)."""
        if self.mode != "per-task":
            return
        if task_id not in self.adapters:
            raise DataError(f"task {task_id} has no per-task adapter (adapt to it first)")
        assert self.peft_model is not None
        set_peft_model_state_dict(self.peft_model, self.adapters[task_id])

    def predict(
        self,
        diffusion: DiscreteDiffusion,
        tasks: Sequence[Task],
        task_index: Mapping[str, int] | None = None,
        *,
        progress: Progress | None = None,
        **settings: Any,
    ) -> Predictions:
        """:func:`predict_tasks` with this model; per task with its own adapter in per-task mode."""
        index = task_index if task_index is not None else self.task_index
        if self.mode != "per-task":
            return predict_tasks(self.model, diffusion, tasks, index, progress=progress, **settings)
        job = (
            progress.add_task("sample per task", total=len(tasks), unit="tasks")
            if progress
            else None
        )
        predictions: dict[str, Any] = {}
        for task in tasks:
            self.use_task(task.id)
            predictions.update(predict_tasks(self.model, diffusion, [task], index, **settings))
            if progress is not None and job is not None:
                progress.advance(job)
        return predictions


def prepare(base: LoadedRun, task_ids: list[str], lora: LoraConfig, mode: str) -> Adapted:
    """The base model with rows for ``task_ids``, set up so only ``mode``'s weights train."""
    model = expanded_model(base, task_ids)
    num_base = len(base.task_ids)
    if mode == "full":
        return Adapted(mode, model, task_ids, num_base)
    model.requires_grad_(False)
    rows = TaskRows(model.task_embed.weight, num_base)
    model.task_embed = rows
    peft_model = None
    if mode in LORA_MODES:
        check_targets(model, lora.target_modules)
        peft_model = peft.get_peft_model(model, peft_config(lora))  # freezes all but LoRA
    rows.new_rows.requires_grad_(mode != "none")
    return Adapted(mode, model, task_ids, num_base, peft_model)
