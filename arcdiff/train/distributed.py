"""torchrun's environment for the trainer: rank, world size, the process group, reductions."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from arcdiff.runs.paths import select_device


def rank_device(device: torch.device | None, local_rank: int, enabled: bool) -> torch.device:
    """The device of one rank: ``device`` (default: the best available); a CUDA device without
    an index is GPU ``local_rank`` under torchrun, so ``--device cuda`` spreads the ranks over
    the GPUs as no ``--device`` does."""
    device = device or select_device()
    if device.type == "cuda" and device.index is None and enabled:
        return torch.device("cuda", local_rank)
    return device


def env_rank() -> int:
    """This process's rank under torchrun (0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


class Distributed:
    """Rank and world size from torchrun's variables; the process group when world > 1.

    The object that begins the process group ends it (:meth:`close`); one begun by a caller
    (the pipeline, whose ranks meet after training) outlives the trainer's."""

    def __init__(self, device: torch.device | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = env_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.device = device = rank_device(device, local, self.enabled)
        self.owns_group = self.enabled and not dist.is_initialized()
        if self.owns_group:
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, values: Tensor) -> Tensor:
        """Each element's mean over ranks, in one all-reduce on this rank's device (NCCL holds
        no CPU tensors) and without a host sync; ``values`` as given on one process."""
        if not self.enabled:
            return values
        total = values.to(self.device, torch.float64, copy=True)  # (N,)
        dist.all_reduce(total)
        return total / self.world

    def mean_of(self, *values: float) -> tuple[float, ...]:
        """:meth:`mean` of host scalars, back on the host (the values as given on one process)."""
        if not self.enabled:
            return values
        return tuple(self.mean(torch.tensor(values, dtype=torch.float64)).tolist())

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank reaches this call (nothing on one process)."""
        if self.enabled:
            cuda = self.device.type == "cuda"
            dist.barrier(device_ids=[self.device.index] if cuda else None)

    def close(self) -> None:
        """End the process group if this object began it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
