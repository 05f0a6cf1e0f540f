"""Muon for the transformer blocks' matrices, AdamW for every other weight, as one optimizer.

Muon (Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-schulz") orthogonalises the
momentum of each 2D weight with a few Newton-Schulz iterations; it is meant for the hidden
matrices only, so embeddings, norms, heads, biases and gates stay on AdamW (as in modded-nanogpt).
:class:`Combined` steps both and shares their param groups, so one LambdaLR scales every group
from its own base LR and one state dict resumes both exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from arcdiff.errors import CheckpointError
from arcdiff.runs.device import cpu_supports_bf16

PARTS = ("adamw", "muon")  # the keys of a Combined state dict, in the order of its groups


def unwrapped(model: nn.Module) -> nn.Module:
    """The module under DDP's ``.module`` and torch.compile's ``._orig_mod`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def muon_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The trainable matrices of the transformer blocks (qkv, proj, fc1, fc2): Muon's share."""
    for name, p in unwrapped(model).named_parameters():
        if p.requires_grad and name.startswith("blocks.") and p.ndim == 2:
            yield name, p


class Combined(torch.optim.Optimizer):
    """Several optimizers stepped as one; ``param_groups`` are the inner optimizers' own group
    dicts, so a scheduler's LR (and ``initial_lr``) written there is what they read."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        self.optimizers = optimizers
        super().__init__(self._inner_groups(), defaults={})

    def _inner_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("Combined.step takes no closure")
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != set(self.optimizers):
            raise CheckpointError(
                f"train.optimizer: the checkpoint's optimizer state holds "
                f"{sorted(state_dict)[:4]}, this run's optimizer {sorted(self.optimizers)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state_dict[name])
        # loading gives the inner optimizers new group dicts: share those from now on
        self.param_groups = self._inner_groups()


def newton_schulz(
    updates: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
):
    """The quintic Newton-Schulz iteration of ``torch.optim.Muon`` (Jordan et al. 2024) on a
    stack of same-shape matrices (N, rows, cols) at once, in ``updates``' dtype: each matrix
    is scaled to spectral norm <= 1, then pushed towards U V^T of its SVD."""
    a, b, c = coefficients
    wide = updates.size(1) <= updates.size(2)
    x = updates if wide else updates.mT  # (N, r, c) with r <= c: the Gram matrix is r x r
    x = x / torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT  # (N, r, r)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, gram_update, x, beta=a)
    return x if wide else x.mT


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton-Schulz iteration in ``ns_dtype`` and batched over
    matrices of one shape (a (N, r, c) stack per shape instead of N small products).

    torch runs the iteration in bf16, which a CPU without AMX / AVX512-BF16 emulates: on a
    2-core AMD EPYC it took 0.82 of toiny's 1.8-second step (NOTES.md, "Steps that hold"). On
    such CPUs arcdiff iterates in float32. Param groups and state are torch's, so checkpoints
    written with ``torch.optim.Muon`` load as they are."""

    def __init__(self, params: Any, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            by_shape: dict[tuple[int, ...], list[Tensor]] = {}
            for p in params:
                by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, same in by_shape.items():
                self._update(group, same, shape)

    def _update(self, group: dict[str, Any], params: list[Tensor], shape: tuple[int, ...]) -> None:
        momentum, lr = group["momentum"], group["lr"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        if group["nesterov"]:
            updates = [g.lerp(buf, momentum) for g, buf in zip(grads, bufs, strict=True)]
        else:
            updates = bufs
        stack = torch.stack(updates).to(self.ns_dtype)  # (N, rows, cols)
        ortho = newton_schulz(stack, group["ns_coefficients"], group["ns_steps"], group["eps"])
        rows, cols = shape
        adjusted = lr * math.sqrt(max(1, rows / cols))  # adjust_lr_fn="original"
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, list(ortho.to(params[0].dtype).unbind(0)), alpha=-adjusted)


def muon_ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 where matrices multiply in bf16 in hardware (CUDA, AMX / AVX512-BF16 CPUs), else
    float32."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16()):
        return torch.bfloat16
    return torch.float32


def muon_with_adamw(
    muon_params: list[nn.Parameter],
    adamw: torch.optim.Optimizer,
    lr: float,
    weight_decay: float,
    *,
    ns_dtype: torch.dtype = torch.bfloat16,
) -> Combined:
    """``muon_params`` on Muon (LR scaled by sqrt(max(1, rows / cols)) as Keller Jordan's
    original), the rest already on ``adamw``."""
    muon = Muon(
        muon_params, lr=lr, weight_decay=weight_decay, adjust_lr_fn="original", ns_dtype=ns_dtype
    )
    return Combined(dict(zip(PARTS, (adamw, muon), strict=True)))


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: dict[str, Any], where: str
) -> None:
    """``optimizer.load_state_dict(saved)``, or a CheckpointError when the checkpoint was
    written by the other kind of optimizer (train.optimizer changed between runs)."""
    combined_saved = set(saved) == set(PARTS)
    if combined_saved != isinstance(optimizer, Combined):
        kinds = ("muon", "adamw") if combined_saved else ("adamw", "muon")
        raise CheckpointError(
            f"{where}: train.optimizer: the checkpoint was trained with {kinds[0]!r}, "
            f"this run uses {kinds[1]!r}"
        )
    optimizer.load_state_dict(saved)
