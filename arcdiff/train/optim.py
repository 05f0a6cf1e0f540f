"""Optimizers, learning-rate schedules and the EMA of the weights (shared with the image track)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from arcdiff.train.muon import muon_ns_dtype, muon_parameters, muon_with_adamw


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    device: torch.device,
    *,
    no_decay: Iterable[nn.Parameter] = (),
    kind: Literal["adamw", "muon"] = "adamw",
    muon_lr: float = 0.02,
) -> torch.optim.Optimizer:
    """AdamW on the trainable weights; matrices and embeddings decay, biases, norms and gates
    do not (as nanoGPT), nor the parameters in ``no_decay``. Fused on CUDA.

    ``kind="muon"``: the transformer blocks' matrices go to Muon at ``muon_lr`` instead
    (train/muon.py) and AdamW keeps the rest in the same two groups at ``lr``."""
    skip = {id(p) for p in no_decay}
    to_muon = [p for _, p in muon_parameters(model)] if kind == "muon" else []
    taken = {id(p) for p in to_muon}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in skip]
    rest = [p for p in params if p.dim() < 2 or id(p) in skip]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    if not to_muon:
        return adamw
    return muon_with_adamw(to_muon, adamw, muon_lr, weight_decay, ns_dtype=muon_ns_dtype(device))


def warmup_cosine(step: int, warmup: int, total: int, *, floor: float = 0.0) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then a cosine from 1 to ``floor`` at ``total``
    (and ``floor`` after it)."""
    if step < warmup:
        return (step + 1) / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))


def warmup_cosine_lr(lr: float, step: int, warmup: int, total: int) -> float:
    """``lr`` times ``warmup_cosine`` (floor 0), the image track's schedule. During warmup ``lr``
    is multiplied in before dividing by ``warmup``, as the image track always has: the other
    order differs in the last bit for some steps, and its runs stay bit-identical this way."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * warmup_cosine(step, warmup, total)


LR_FLOOR = 0.1  # the trainer's cosine ends at a tenth of the peak learning rate


def lr_factor(
    step: int, warmup: int, horizon: int, schedule: Literal["cosine", "constant"] = "cosine"
) -> float:
    """The trainer's schedule, a function of the step alone: linear warmup over ``warmup``
    steps, then a cosine to ``LR_FLOOR`` at ``horizon`` (and the floor after it), or constant.

    A clock-budgeted run fixes ``horizon`` once, from its measured step rate at the end of the
    warmup (train/horizon.py), so two runs with one seed and horizon take the same steps."""
    if schedule == "constant" and step >= warmup:
        return 1.0
    return warmup_cosine(step, warmup, horizon, floor=LR_FLOOR)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warm-up: the decay grows as (1 + step) / (10 + step) up to ``decay``."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over every parameter in one foreach call."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("the EMA and the model have different parameters")
    torch._foreach_lerp_(ema_params, params, 1 - decay)
