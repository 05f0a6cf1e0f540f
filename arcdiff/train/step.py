"""One training step of the denoiser: draw, corrupt, denoise, score, backward, clip, update, EMA.

The trainer, LoRA adaptation and the benchmarks all take their steps here, so what a benchmark
times is what a run does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from arcdiff.config import Config
from arcdiff.data.dataset import Batch
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import TrainingError
from arcdiff.model.denoiser import DenoiserOutput
from arcdiff.runs.device import check_cpu_bf16, fast_math
from arcdiff.train.optim import ema_decay_at, ema_update


def denoise_pass(
    model: nn.Module,
    batch: Batch,
    x_t: Tensor,
    logsnr: Tensor,
    valid: Tensor,
    self_condition: bool,
):
    """One training/validation prediction; with self-conditioning, a no-grad first pass."""
    args = (batch.inputs, x_t, logsnr, batch.task, batch.dihedral)
    sc_logits = None
    if self_condition:
        with torch.no_grad():
            sc_logits = model(*args).logits.detach()
    return model(*args, sc_logits=sc_logits, valid=valid)


def diffusion_loss(
    model: nn.Module,
    batch: Batch,
    diffusion: DiscreteDiffusion,
    steps: Tensor,
    generator: torch.Generator,
    size_loss_weight: float,
    self_condition: bool,
) -> tuple[Tensor, dict[str, Tensor], DenoiserOutput]:
    """Corrupt the batch's outputs at ``steps`` (noise drawn on the generator's device: the
    trainer's is the model's, see runs/device.py), denoise, score."""
    x0, valid = batch.outputs, batch.outputs != PAD
    at = generator.device
    x_t = diffusion.corrupt(x0.to(at), steps.to(at), valid.to(at), generator).to(x0.device)
    logsnr = diffusion.logsnr(steps).to(x0.device)
    pred = denoise_pass(model, batch, x_t, logsnr, valid, self_condition)
    loss, parts = diffusion.loss(
        pred.logits, pred.size_logits, x0, batch.output_sizes, valid, size_loss_weight
    )
    return loss, parts, pred


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device``; to CUDA from pinned memory without blocking the host."""
    if device.type != "cuda":
        return Batch(**{k: v.to(device) for k, v in vars(batch).items()})
    return Batch(
        **{k: v.pin_memory().to(device, non_blocking=True) for k, v in vars(batch).items()}
    )


def _same(values: Tensor) -> Tensor:
    return values  # one process: the mean over ranks is the value


def _nothing() -> None:
    return None


PARTS = ("colour_loss", "size_loss")  # what DiscreteDiffusion.loss reports beside the loss


@dataclass
class StepResult:
    """What one step did: the loss (mean over ranks), its parts, the gradient norm, and whether
    the update was applied (not when the loss or the gradient was non-finite)."""

    loss: float
    parts: dict[str, float]
    grad_norm: float
    applied: bool
    self_cond: bool
    seconds: dict[str, float] = field(default_factory=dict)  # data, fwd_bwd, optim


@dataclass
class TrainStep:
    """Everything one optimisation step needs, built once per run.

    ``model`` holds the parameters that are clipped, updated and averaged into ``ema``;
    ``forward`` is what runs (the model itself, or its compiled or DDP wrapper). ``mean``
    averages a tensor of scalars over ranks on their device (identity on one process);
    ``no_sync`` defers DDP's gradient all-reduce on all but the last micro-batch. The step
    reads its scalars on the host once, after the update's inputs are known.
    """

    model: nn.Module
    diffusion: DiscreteDiffusion
    optimizer: torch.optim.Optimizer
    grad_clip: float
    size_loss_weight: float
    self_cond_prob: float = 0.0
    grad_accum: int = 1
    forward: nn.Module | None = None
    scheduler: Any = None
    ema: nn.Module | None = None
    ema_decay: float = 0.0
    autocast: Callable[[], Any] = contextlib.nullcontext
    no_sync: Callable[[], Any] | None = None
    mean: Callable[[Tensor], Tensor] = _same
    sync: Callable[[], None] = _nothing  # e.g. torch.cuda.synchronize, for timings

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        diffusion: DiscreteDiffusion | None = None,
        scheduler: Any = None,
        ema: nn.Module | None = None,
        forward: nn.Module | None = None,
        mean: Callable[[Tensor], Tensor] | None = None,
        sync: Callable[[], None] | None = None,
        batch_field: str = "train.batch_size",
    ) -> TrainStep:
        """The step ``cfg`` describes (clipping, size-loss weight, self-conditioning, gradient
        accumulation, EMA decay, bf16 autocast) on what the config does not hold: the weights,
        their optimizer, schedule and EMA, the ``forward`` wrapper (compiled, DDP), the
        all-reduce ``mean`` and a ``sync`` for timings. ``batch_field`` names the batch size the
        steps take (``lora.batch_size`` for an adaptation): it must split into
        ``train.grad_accum`` micro-batches."""
        t = cfg.train
        section, name = batch_field.split(".")
        batch_size = getattr(getattr(cfg, section), name)
        if batch_size % t.grad_accum:
            raise TrainingError(
                f"{batch_field}={batch_size} is not divisible by train.grad_accum={t.grad_accum}"
            )
        check_cpu_bf16(device, t.cpu_bf16)
        if diffusion is None:
            diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
        return cls(
            model=model,
            diffusion=diffusion,
            optimizer=optimizer,
            grad_clip=t.grad_clip,
            size_loss_weight=cfg.diffusion.size_loss_weight,
            self_cond_prob=t.self_cond_prob,
            grad_accum=t.grad_accum,
            forward=forward,
            scheduler=scheduler,
            ema=ema,
            ema_decay=t.ema_decay,
            autocast=lambda: fast_math(device, t.bf16, cpu_bf16=t.cpu_bf16),
            no_sync=forward.no_sync if isinstance(forward, DistributedDataParallel) else None,
            mean=mean or _same,
            sync=sync or _nothing,
        )

    def __call__(
        self,
        draw: Callable[[int], Batch],
        batch_size: int,
        noise_gen: torch.Generator,
        coin_gen: torch.Generator,
        step: int,
        *,
        device: torch.device,
        self_cond: bool | None = None,
    ) -> StepResult:
        """One step on ``batch_size`` examples from ``draw(n)``; ``step`` counts the updates so
        far (the EMA warm-up reads it). ``self_cond`` forces self-conditioning on or off
        instead of tossing the coin."""
        model = self.model
        forward = self.forward if self.forward is not None else model  # compiled: no bool()
        seconds = {"data": 0.0, "fwd_bwd": 0.0, "optim": 0.0}
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self_cond is None:
            self_cond = model.self_condition and (
                torch.rand((), generator=coin_gen, device=coin_gen.device).item()
                < self.self_cond_prob
            )
        micro = batch_size // self.grad_accum
        # loss and its parts, summed over micro-batches on the device (float64, as on the host)
        sums = torch.zeros(1 + len(PARTS), dtype=torch.float64, device=device)
        for k in range(self.grad_accum):
            began = time.perf_counter()
            batch = to_device(draw(micro), device)
            steps = self.diffusion.draw_timesteps(micro, noise_gen)
            self.sync()
            drawn = time.perf_counter()
            last = k == self.grad_accum - 1
            deferred = self.no_sync() if self.no_sync and not last else contextlib.nullcontext()
            with deferred, self.autocast():
                loss, parts, _ = diffusion_loss(
                    forward,
                    batch,
                    self.diffusion,
                    steps,
                    noise_gen,
                    self.size_loss_weight,
                    self_cond,
                )
                (loss / self.grad_accum).backward()
            scalars = torch.stack([loss.detach(), *(parts[name].detach() for name in PARTS)])
            sums += scalars.double() / self.grad_accum
            seconds["data"] += drawn - began
            seconds["fwd_bwd"] += time.perf_counter() - drawn
        began = time.perf_counter()
        grad_norm_t = torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        means = self.mean(sums)  # one all-reduce under DDP
        # the step's one host sync: the update is skipped when a value is not finite
        loss_mean, *part_means, grad_norm = torch.cat(
            [means, grad_norm_t.detach().double().reshape(1).to(means.device)]
        ).tolist()
        parts_mean = dict(zip(PARTS, part_means, strict=True))
        if not (math.isfinite(loss_mean) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss_mean, parts_mean, grad_norm, False, self_cond, seconds)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            ema_update(self.ema, model, ema_decay_at(step + 1, self.ema_decay))
        self.sync()
        seconds["optim"] = time.perf_counter() - began
        return StepResult(loss_mean, parts_mean, grad_norm, True, self_cond, seconds)
