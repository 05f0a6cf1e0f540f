"""Adapting a trained run to tasks it has never seen: new task embeddings plus peft LoRA.

A run knows its tasks by their rows of the denoiser's ``task_embed``; a new task has none. The
adapted model keeps the base run's rows (a known task keeps its own) and appends one row per new
task, initialised from the mean of the trained rows. What trains is ``lora.mode``:

    shared           one LoRA adapter on the attention and MLP linears for all the tasks, plus
                     the new rows; ``lora.steps`` steps
    per-task         a fresh adapter (and the task's row) per task, trained on that task alone:
                     the test-time-training setting; ``lora.steps`` steps per task
    embeddings-only  the new rows only
    full             every weight, as a comparison

The base weights stay frozen (bit-identical) in every mode but ``full``. Training sees the
tasks' demonstration pairs only, with a fresh augmentation per example: the adapter works on
:class:`Task` objects, which carry no test outputs; only the scorer reads those. The base run's
files are never written. An adapter directory (``RUN/lora/<name>/``) holds:

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

import dataclasses
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import peft
import torch
import torch.nn.functional as F
from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from arcdiff.config import (
    Config,
    LoraConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_config_path,
    save_config,
)
from arcdiff.data.dataset import Batch, TrainingStream
from arcdiff.data.tasks import Grid, Task, TaskSet, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, ConfigError, DataError, OutputError, TrainingError
from arcdiff.eval.sample import predict_tasks
from arcdiff.eval.score import Predictions, score_split
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.checkpoint import (
    build_model,
    first_difference,
    load_run_model,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.runs.paths import code_version, select_device, write_json
from arcdiff.train.logging import MetricsLogger
from arcdiff.train.optim import lr_factor, make_optimizer
from arcdiff.train.step import TrainStep

MODES = ("shared", "per-task", "embeddings-only", "full")
LORA_MODES = ("shared", "per-task")
BASE_SECTIONS = ("model", "diffusion", "data")  # what the base run was built and trained with
MANIFEST = "lora.json"
BASELINE = "baseline"  # scores of the untrained model (new rows at their mean, no adapter)
MERGE_PER_TASK = (
    "--merge: per-task adapters differ per task, so they do not merge into one model; "
    "evaluate them with `arcdiff evaluate --adapter NAME`"
)


# ---------------------------------------------------------------------------------------------
# the base run and the adaptation config


@dataclass(frozen=True)
class BaseRun:
    """A trained run's EMA model, config and task index; never written to."""

    run_dir: Path
    checkpoint: str  # final, best or last
    model: Denoiser
    cfg: Config
    task_ids: list[str]  # task id of each embedding row
    step: int


def load_base(run_dir: Path, checkpoint: str = "final") -> BaseRun:
    """Read a run's EMA weights; a missing run or a mismatched checkpoint is a CheckpointError."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir}: no checkpoints/{checkpoint}.pt; the base must be a trained run directory"
        )
    model, cfg, state = load_run_model(path, use_ema=True)
    return BaseRun(run_dir, checkpoint, model, cfg, list(state["task_ids"]), int(state["step"]))


def lora_config(
    base: BaseRun, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The base run's config with a lora config file's sections and ``--set`` overrides on top.

    The model, diffusion and data sections describe the base run: a file or override that
    changes one of them is a CheckpointError naming the first differing key.
    """
    own = load_config(config)  # an unknown key or a bad value is a ConfigError here
    merged = config_to_dict(base.cfg)
    if config is not None:
        raw = orjson.loads(resolve_config_path(config).read_bytes())
        for section, values in raw.items():
            if section != "name":
                merged[section] = {**merged[section], **values}
    where = str(config) if config is not None else "--set"
    cfg = apply_overrides(config_from_dict(merged, where), overrides)
    cfg = replace(cfg, name=own.name if config is not None else f"{base.cfg.name}_lora")
    saved, now = config_to_dict(base.cfg), config_to_dict(cfg)
    for section in BASE_SECTIONS:
        diff = first_difference(saved[section], now[section], f"{section}.")
        if diff:
            raise CheckpointError(
                f"{where} does not match the base run {base.run_dir}: {diff} (an adaptation "
                "keeps the base's model, diffusion and data settings)"
            )
    return cfg


def with_mode(cfg: Config, mode: str) -> Config:
    """``cfg`` with ``lora.mode`` set; an unknown mode is a ConfigError."""
    return apply_overrides(cfg, [f"lora.mode={mode}"])


# ---------------------------------------------------------------------------------------------
# the adapted model


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


def expanded_model(base: BaseRun, task_ids: Sequence[str]) -> Denoiser:
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


def _check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})
    missing = [t for t in targets if t not in linear]
    if missing or not targets:
        raise ConfigError(
            f"lora.target_modules: no linear layer named {', '.join(missing) or '(none given)'} "
            f"in the model (its linear layers: {', '.join(linear)})"
        )


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def _adapter_state(model: peft.PeftModel) -> dict[str, Tensor]:
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
        job = progress.add_task("sample per task", total=len(tasks)) if progress else None
        predictions: dict[str, Any] = {}
        for task in tasks:
            self.use_task(task.id)
            predictions.update(predict_tasks(self.model, diffusion, [task], index, **settings))
            if progress is not None and job is not None:
                progress.advance(job)
        return predictions


def prepare(base: BaseRun, task_ids: list[str], lora: LoraConfig, mode: str) -> Adapted:
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
        _check_targets(model, lora.target_modules)
        peft_model = peft.get_peft_model(model, peft_config(lora))  # freezes all but LoRA
    rows.new_rows.requires_grad_(mode != "none")
    return Adapted(mode, model, task_ids, num_base, peft_model)


# ---------------------------------------------------------------------------------------------
# training


def progress_bar(label: str, console: Console | None, enabled: bool, info: bool = True) -> Progress:
    """A rich bar; with ``info``, each job shows its ``info`` field (loss, task)."""
    columns = [TextColumn(f"[bold]{escape(label)}"), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, TimeRemainingColumn(), console=console, disable=not enabled)


@dataclass
class _Fit:
    """What one adaptation's training loop shares across tasks (per-task mode runs it per task)."""

    cfg: Config
    diffusion: DiscreteDiffusion
    device: torch.device
    logger: MetricsLogger
    bar: Progress
    job: Any
    step: int = 0  # optimiser steps so far, over every task


def _with_rows(batch: Batch, rows: Tensor) -> Batch:
    """The batch with the stream's task numbers replaced by embedding rows."""
    return Batch(**{**vars(batch), "task": rows[batch.task]})


def _fit(adapted: Adapted, tasks: Sequence[Task], fit: _Fit, seed: int, label: str) -> None:
    """Train the trainable weights ``lora.steps`` steps on the tasks' demonstration pairs."""
    cfg, lora = fit.cfg, fit.cfg.lora
    model = adapted.model
    rows = model.task_embed
    new_rows = [rows.new_rows] if isinstance(rows, TaskRows) else []  # never decayed
    optimizer = make_optimizer(
        model, lora.lr, cfg.train.weight_decay, fit.device, no_decay=new_rows
    )
    schedule = replace(
        cfg,
        train=replace(
            cfg.train, max_steps=lora.steps, warmup_steps=max(1, lora.steps // 10), max_minutes=None
        ),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, schedule))
    stream = TrainingStream(
        TaskSet("", (), {}),
        tasks,  # Task objects: demonstration pairs and test inputs, no test outputs
        max_size=cfg.data.max_size,
        eval_weight=1.0,
        augment=cfg.data.augment,
        permute_background=cfg.data.permute_background,
        seed=seed,
        bucket_window=cfg.data.bucket_window,  # crops canvases as the base was trained, if it was
    )
    index = adapted.task_index
    task_rows = torch.tensor([index[t.id] for t in tasks], dtype=torch.long)
    noise_gen = torch.Generator().manual_seed(seed)  # the coin and the corruption noise
    take_step = TrainStep(
        model=model,
        diffusion=fit.diffusion,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_clip=cfg.train.grad_clip,
        size_loss_weight=cfg.diffusion.size_loss_weight,
        self_cond_prob=cfg.train.self_cond_prob,
    )

    def draw(n: int) -> Batch:
        return _with_rows(stream.sample(n), task_rows)

    for _ in range(lora.steps):
        r = take_step(draw, lora.batch_size, noise_gen, noise_gen, fit.step, device=fit.device)
        if not r.applied:
            raise TrainingError(f"adapting {label}: non-finite loss at step {fit.step}")
        fit.step += 1
        metrics = {"loss": r.loss, **r.parts}
        metrics |= {"lr": scheduler.get_last_lr()[0], "grad_norm": r.grad_norm}
        fit.logger.log(fit.step, {**metrics, "task": label})
        fit.bar.update(fit.job, advance=1, info=f"{escape(label)} loss {r.loss:.3f}")
    model.eval()


def adapt(
    base: BaseRun,
    tasks: Sequence[Task],
    cfg: Config,
    log_dir: Path,
    *,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> Adapted:
    """Adapt ``base`` to ``tasks`` as ``cfg.lora`` says; the training log goes to ``log_dir``.

    ``tasks`` are :class:`Task` objects: the adaptation cannot see their test outputs.
    """
    mode = cfg.lora.mode
    if not tasks:
        raise DataError("no tasks to adapt to")
    device = device or select_device()
    torch.manual_seed(cfg.train.seed)  # LoRA's initial A matrices
    adapted = prepare(base, adapted_task_ids(base.task_ids, tasks), cfg.lora, mode)
    adapted.model.to(device)
    runs = len(tasks) if mode == "per-task" else 1
    logger = MetricsLogger(log_dir, cfg)
    bar = progress_bar(f"adapt {mode}", console, progress)
    with bar:
        job = bar.add_task(mode, total=runs * cfg.lora.steps, info="")
        diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
        fit = _Fit(cfg, diffusion, device, logger, bar, job)
        if mode != "per-task":
            _fit(adapted, tasks, fit, cfg.data.seed, mode)
        else:
            assert adapted.peft_model is not None
            fresh = _adapter_state(adapted.peft_model)
            for k, task in enumerate(tasks):
                set_peft_model_state_dict(adapted.peft_model, fresh)
                _fit(adapted, [task], fit, cfg.data.seed + k, task.id)
                adapted.adapters[task.id] = _adapter_state(adapted.peft_model)
    logger.close()
    return adapted


# ---------------------------------------------------------------------------------------------
# saving and loading


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
    base: BaseRun,
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


def save_merged(adapted: Adapted, out_dir: Path, cfg: Config, base: BaseRun) -> Path:
    """A run directory whose checkpoint has the adapter merged in: ``arcdiff evaluate --run``."""
    if adapted.mode == "per-task":
        raise ConfigError(MERGE_PER_TASK)
    model = adapted.model
    if adapted.peft_model is not None:
        model = adapted.peft_model.merge_and_unload()
        adapted.peft_model = None  # the LoRA layers are folded into the linears now
    model = plain_rows(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    checkpoint = {
        "model": state,
        "ema": state,
        "config": config_to_dict(cfg),
        "task_ids": adapted.task_ids,
        "model_args": {"num_tasks": len(adapted.task_ids), "max_size": cfg.data.max_size},
        "step": base.step,
        "num_params": sum(v.numel() for v in state.values()),
        "code_version": code_version(),
        "adapted_from": {"run": str(base.run_dir), "checkpoint": base.checkpoint},
    }
    save_config(cfg, out_dir / "config.json")
    save_checkpoint(out_dir / "checkpoints" / "final.pt", checkpoint)
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
    base = load_base(run_dir, manifest["base_checkpoint"])
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


# ---------------------------------------------------------------------------------------------
# scoring and the comparison


def demonstration_split(tasks: Sequence[Task]) -> tuple[list[Task], dict[str, tuple[Grid, ...]]]:
    """Each task with its demonstration inputs as test inputs, and their outputs as truths."""
    as_tests = [dataclasses.replace(t, test_inputs=tuple(p.input for p in t.demos)) for t in tasks]
    return as_tests, {t.id: tuple(p.output for p in t.demos) for t in tasks}


@dataclass(frozen=True)
class ModeResult:
    """One row of the comparison: an adaptation (or the baseline) and its scores."""

    name: str
    mode: str
    steps: int  # optimiser steps in all (per-task: steps x tasks)
    train_s: float
    eval_s: float
    test: dict[str, Any]  # score_split summary on the tasks' test inputs
    demos: dict[str, Any]  # score_split summary on their demonstration pairs: a fit measure
    lora: dict[str, Any] = field(default_factory=dict)  # the lora section it trained with


def score_adapted(
    adapted: Adapted,
    tasks: TaskSet,
    cfg: Config,
    *,
    device: torch.device,
    console: Console | None,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Scores on the test inputs (eval settings) and on the demonstration pairs (one identity
    sample each, no vote); returns both and the wall time."""
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    shared = {"num_steps": cfg.eval.num_steps, "batch_size": cfg.eval.batch_size}
    shared |= {"seed": cfg.eval.seed, "device": device, "crop": cfg.data.bucket_window > 1}
    shared |= {"size_vote": cfg.eval.size_vote, "size_prior": cfg.eval.size_prior}
    demo_tasks, demo_truths = demonstration_split(tasks.tasks)
    start = time.monotonic()
    bar = progress_bar("sample", console, progress, info=False)
    with bar:
        test = adapted.predict(
            diffusion,
            tasks.tasks,
            maj=cfg.eval.maj,
            num_augs=cfg.eval.num_augs,
            progress=bar,
            **shared,
        )
        # the demonstration prior would read each pair's own output: off for the fit measure
        demo_settings = shared | {"size_prior": False}
        demos = adapted.predict(diffusion, demo_tasks, maj=False, progress=bar, **demo_settings)
    wall = time.monotonic() - start
    test_scores = score_split(test, tasks.tasks, tasks.solutions)  # the only read of test outputs
    return test_scores, score_split(demos, demo_tasks, demo_truths), wall


def _write_scores(out_dir: Path, result: ModeResult, test: dict, demos: dict, cfg: Config) -> None:
    keys = ("num_steps", "maj", "num_augs", "seed", "size_vote", "size_prior")
    settings = {k: getattr(cfg.eval, k) for k in keys}
    write_json(
        out_dir / "scores.json",
        {
            "result": dataclasses.asdict(result),
            "test": test,
            "demos": demos,
            "settings": {
                "test": settings,
                "demos": {**settings, "maj": False, "num_augs": 1, "size_prior": False},
            },
        },
    )


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished adapter directory into place (an old adapter of that name goes)."""
    if final.exists():
        if not (final / MANIFEST).is_file() and final.name != BASELINE:
            raise CheckpointError(f"{final}: exists and is not an adapter; choose another --name")
        shutil.rmtree(final)
    tmp.replace(final)


def run_lora(
    base: BaseRun,
    cfg: Config,
    source: str,
    *,
    modes: Sequence[str],
    names: Sequence[str],
    out: Path | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    merge: bool = False,
    evaluate: bool = True,
    baseline: bool = True,
    device: torch.device | None = None,
    console: Console | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[ModeResult]:
    """``arcdiff lora``: adapt ``base`` to ``source``'s tasks in each mode, save, score, compare.

    An adapter name that exists in ``out`` is refused (before any training) unless ``force``.

    With ``evaluate`` (and ``baseline``), the untrained model (new rows at their mean) is scored
    first; every adaptation then trains, saves to ``out/<name>/`` (default ``RUN/lora``) and is
    scored. The rows join those of earlier runs on the same source in ``out/comparison.json``
    (a name's new row replaces its old one); returns every row.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if BASELINE in names:
        raise ConfigError(f"--name: '{BASELINE}' is where the baseline's scores go; pick another")
    modes = [with_mode(cfg, m).lora.mode for m in modes]  # an unknown mode is a ConfigError
    if merge and "per-task" in modes:
        raise ConfigError(MERGE_PER_TASK)
    device = device or select_device()
    console = console or Console()
    out = out or base.run_dir / "lora"
    tasks = load_tasks(source, max_size=cfg.data.max_size, ids=ids, limit=limit)
    if not len(tasks):
        raise DataError(f"{source}: no tasks to adapt to (after the base's max_size filter)")
    if any(m in LORA_MODES for m in modes):
        _check_targets(base.model, cfg.lora.target_modules)
    _check_names(out, names, force)
    task_ids = adapted_task_ids(base.task_ids, tasks.tasks)
    console.print(
        f"adapting {base.run_dir} (step {base.step}, {len(base.task_ids)} tasks) to "
        f"{len(tasks)} task(s) of {source}, {len(task_ids) - len(base.task_ids)} new"
    )
    scoring = {"device": device, "console": console, "progress": progress}
    results: list[ModeResult] = []
    if evaluate and baseline:
        untrained = prepare(base, task_ids, cfg.lora, "none")
        untrained.model.to(device).eval()
        tmp = _fresh(out / f".{BASELINE}.tmp")
        results.append(_score_into(tmp, BASELINE, untrained, tasks, cfg, 0, 0.0, **scoring))
        _replace_dir(tmp, out / BASELINE)
    for mode, name in zip(modes, names, strict=True):
        mode_cfg = with_mode(cfg, mode)
        tmp = _fresh(out / f".{name}.tmp")
        start = time.monotonic()
        adapted = adapt(
            base, tasks.tasks, mode_cfg, tmp, device=device, console=console, progress=progress
        )
        train_s = time.monotonic() - start
        save_adapted(
            adapted, tmp, mode_cfg, base, source=source, tasks=tasks.tasks, train_s=train_s
        )
        if evaluate:
            steps = (len(tasks) if mode == "per-task" else 1) * cfg.lora.steps
            results.append(
                _score_into(tmp, name, adapted, tasks, mode_cfg, steps, train_s, **scoring)
            )
        if merge:
            save_merged(
                adapted, tmp / "merged", adapter_run_config(mode_cfg, source, tasks.tasks), base
            )
        _replace_dir(tmp, out / name)
        console.print(f"saved adapter {escape(str(out / name))}")
    if not results:
        return results
    rows = _join_comparison(out / "comparison.json", source, results)
    console.print(comparison_table(rows, source))
    return rows


def _check_names(out: Path, names: Sequence[str], force: bool) -> None:
    """Before any training: a name whose folder exists is refused, unless it is an adapter
    and ``force`` says to replace it."""
    for name in names:
        folder = out / name
        if not folder.exists():
            continue
        if not (folder / MANIFEST).is_file():
            raise CheckpointError(f"{folder}: exists and is not an adapter; choose another --name")
        if not force:
            raise OutputError(
                f"{folder} already exists; pass --force to replace it or choose another --name"
            )


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _score_into(
    folder: Path,
    name: str,
    adapted: Adapted,
    tasks: TaskSet,
    cfg: Config,
    steps: int,
    train_s: float,
    **scoring: Any,
) -> ModeResult:
    """Score ``adapted``, write ``folder/scores.json`` and return its comparison row."""
    test, demos, wall = score_adapted(adapted, tasks, cfg, **scoring)
    lora = dataclasses.asdict(cfg.lora) if adapted.mode != "none" else {}
    row = ModeResult(
        name, adapted.mode, steps, train_s, wall, test["summary"], demos["summary"], lora
    )
    _write_scores(folder, row, test, demos, cfg)
    return row


def _join_comparison(path: Path, source: str, results: Sequence[ModeResult]) -> list[ModeResult]:
    """Earlier rows of ``path`` for the same source, updated by name with ``results``; saved."""
    rows: dict[str, ModeResult] = {}
    if path.is_file():
        saved = orjson.loads(path.read_bytes())
        if saved.get("source") == source:
            rows = {r["name"]: ModeResult(**r) for r in saved["rows"]}
    rows |= {r.name: r for r in results}
    ordered = sorted(rows.values(), key=lambda r: r.name != BASELINE)  # the baseline first
    write_json(path, {"source": source, "rows": [dataclasses.asdict(r) for r in ordered]})
    return ordered


TABLE_CAPTION = (
    "pass@2 / oracle: the tasks' test inputs solved by one of the 2 voted attempts / by any "
    "candidate, mean over tasks. size: attempt 1 has the right size; cells: its cells right, "
    "over those of the right size. demo exact / cells: attempt 1 (one identity sample, no vote) "
    "exactly right / its cells right (right size only) on the tasks' own demonstration pairs, "
    "the pairs the adaptation trained on: a fit measure, not generalisation. baseline: new task "
    "rows at the mean of the trained rows, no training. steps: optimiser steps in all."
)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def comparison_table(results: Sequence[ModeResult], source: str) -> Table:
    """Baseline vs each adaptation on the adapted tasks (the caption defines the columns)."""
    table = Table(
        title=f"LoRA adaptation: {escape(source)} (scores in %)",
        caption=TABLE_CAPTION,
        box=box.SIMPLE,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("adapter", no_wrap=True)
    for name in ("steps", "pass@2", "oracle", "size", "cells", "demo\nexact", "demo\ncells"):
        table.add_column(name, justify="right")
    table.add_column("train\ns", justify="right")
    table.add_column("eval\ns", justify="right")
    for r in results:
        label = r.name if r.name == r.mode or r.mode == "none" else f"{r.name} ({r.mode})"
        table.add_row(
            escape(label),
            str(r.steps),
            _pct(r.test.get("pass@2")),
            _pct(r.test.get("oracle")),
            _pct(r.test.get("size_accuracy")),
            _pct(r.test.get("cell_accuracy")),
            _pct(r.demos.get("pass@1")),
            _pct(r.demos.get("cell_accuracy")),
            f"{r.train_s:.0f}",
            f"{r.eval_s:.0f}",
        )
    return table
