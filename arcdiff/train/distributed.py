"""torchrun's environment for the trainer: rank, world size, the process group, reductions."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from arcdiff.runs.paths import select_device


class Distributed:
    """Rank and world size from torchrun's variables; the process group when world > 1."""

    def __init__(self, device: torch.device | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if device is None:
            device = select_device()
            if device.type == "cuda" and self.enabled:
                device = torch.device("cuda", local)
        self.device = device
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, *values: float) -> tuple[float, ...]:
        """Each scalar's mean over ranks, in one all-reduce (the values as given on one process)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return tuple((t / self.world).tolist())

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
