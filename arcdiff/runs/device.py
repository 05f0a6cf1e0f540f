"""What a command needs of the device it runs on: seeded generators there, the CUDA RNG state
of a checkpoint, bf16 autocast with TF32 on CUDA, and bf16 autocast on CPUs that have it.

On the CPU each of these is what arcdiff always did (a CPU generator, no CUDA state, fp32 unless
train.cpu_bf16), so CPU runs stay bit-identical; on CUDA every random draw happens on the GPU
from a generator there (a CPU generator cannot feed ``torch.randint(..., device="cuda")``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from arcdiff.errors import ConfigError


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


def cpu_flags() -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo; empty where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16; Linux only)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def check_cpu_bf16(device: torch.device, enabled: bool) -> None:
    """A ConfigError when bf16 autocast on the CPU is asked for where it would be emulated."""
    if enabled and device.type == "cpu" and not cpu_supports_bf16():
        raise ConfigError(
            "train.cpu_bf16: this CPU has neither AMX nor AVX512-BF16 (flags in /proc/cpuinfo)"
        )


@contextlib.contextmanager
def fast_math(
    device: torch.device, enabled: bool = True, *, cpu_bf16: bool = False
) -> Iterator[None]:
    """bf16 autocast and TF32 matmuls on CUDA when ``enabled``; bf16 autocast on the CPU when
    ``cpu_bf16`` (check it with :func:`check_cpu_bf16`); nothing at all otherwise."""
    if device.type == "cpu" and cpu_bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
        return
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
