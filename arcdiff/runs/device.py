"""What a command needs of the device it runs on: seeded generators there, the CUDA RNG state
of a checkpoint, and bf16 autocast with TF32 for inference and adaptation on CUDA.

On the CPU each of these is what arcdiff always did (a CPU generator, no CUDA state, fp32), so
CPU runs stay bit-identical; on CUDA every random draw happens on the GPU from a generator there
(a CPU generator cannot feed ``torch.randint(..., device="cuda")``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def seeded_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator on ``device`` (the device of the tensors it will fill), seeded with ``seed``.

    Every random draw of the sampler, the size vote and the training noise takes its generator
    from here; CPU and CUDA generators are different algorithms, so the same seed gives other
    numbers on each (NOTES.md, "The GPU path")."""
    device = torch.device(device)
    return torch.Generator(device=device).manual_seed(seed)


def cuda_rng_state(device: torch.device) -> dict[str, Any]:
    """``{"cuda": state}`` of ``device``'s global CUDA generator (dropout draws from it), or {}
    off CUDA: what a checkpoint adds to its ``rng`` states."""
    if device.type != "cuda":
        return {}
    return {"cuda": torch.cuda.get_rng_state(device)}


def restore_cuda_rng(rng: dict[str, Any], device: torch.device) -> None:
    """Put back the CUDA state :func:`cuda_rng_state` saved, when there is one and the run is
    on CUDA (a checkpoint from the CPU, or from before the states were saved, has none)."""
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


@contextlib.contextmanager
def fast_math(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast and TF32 matmuls on CUDA when ``enabled``; nothing at all elsewhere."""
    if not enabled or device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
