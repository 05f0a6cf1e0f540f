"""Muon for the transformer blocks' matrices, AdamW for every other weight, as one optimizer.

Muon (Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-schulz") orthogonalises the
momentum of each 2D weight with a few Newton-Schulz iterations; it is meant for the hidden
matrices only, so embeddings, norms, heads, biases and gates stay on AdamW (as in modded-nanogpt).
:class:`Combined` steps both and shares their param groups, so one LambdaLR scales every group
from its own base LR and one state dict resumes both exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from arcdiff.errors import CheckpointError

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


def muon_with_adamw(
    muon_params: list[nn.Parameter], adamw: torch.optim.Optimizer, lr: float, weight_decay: float
) -> Combined:
    """``muon_params`` on Muon (LR scaled by sqrt(max(1, rows / cols)) as Keller Jordan's
    original), the rest already on ``adamw``."""
    muon = torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay, adjust_lr_fn="original")
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
