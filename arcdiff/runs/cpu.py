"""The CPU a command runs on: how many cores it really has, and the process settings that keep a
CPU step fast (threads, flushed denormals, glibc's allocator keeping its pages).

Measured on 2 cores (NOTES.md, "Steps that hold"): glibc returns the large activations of every
step to the OS and faults them back in (24,000 page faults a step, 1.75x slower on one thread);
denormal floats slow a Muon run that drifts into them by 1.4x; two OpenMP threads stall whenever
another process takes one of the two cores, so a clock-budgeted run watches its own rate
(:class:`RateWatch`) and drops to one thread when it collapses.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

# mallopt(3) parameters: never give freed memory back, never serve a block by its own mmap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30  # glibc caps the mmap threshold at 32 MiB on 64-bit; larger is refused


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or None where there is no limit."""
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if quota_file.is_file() and period_file.is_file():
        quota, period = int(quota_file.read_text()), int(period_file.read_text())
        if quota > 0 and period > 0:
            return quota / period
    return None


def available_cpus() -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of unmapping it (a training step frees
    and reallocates the same activations every step). False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    return bool(ok)


@dataclass(frozen=True)
class CpuSetup:
    threads: int
    flush_denormal: bool
    keep_memory: bool

    def describe(self) -> str:
        extras = [x for x, on in (("denormals flushed", self.flush_denormal),) if on]
        return ", ".join([f"{self.threads} thread{'s' * (self.threads != 1)}", *extras])


def setup_cpu(threads: int | None, device: torch.device) -> CpuSetup:
    """Threads, denormals flushed to zero and the allocator's memory kept, for a run on
    ``device``'s host. Threads: ``threads``; else what OMP_NUM_THREADS says where it is set;
    else the cores the process may use (affinity, cgroup quota), shared among torchrun's local
    processes. A CUDA run gets the threads only: its CPU does the data work, where neither of
    the others shows."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads:
        n = threads
    elif os.environ.get("OMP_NUM_THREADS"):
        n = torch.get_num_threads()
    else:
        n = max(1, available_cpus() // local)
    torch.set_num_threads(n)
    if device.type != "cpu":
        return CpuSetup(n, False, False)
    flushed = torch.set_flush_denormal(True)  # False where the CPU has no such mode
    return CpuSetup(n, flushed, keep_freed_memory())


@dataclass(frozen=True)
class Slowdown:
    """What :class:`CpuWatch` saw in one window: the run's rate, its reference, how busy its
    threads were, and the thread count it asks the run to continue on (None: unchanged)."""

    rate: float
    reference: float | None  # None: the run's first window was already shared
    busy: float
    threads: int | None

    def message(self) -> str:
        against = f" against {self.reference:.2f} at its start" if self.reference else ""
        seen = f"{self.rate:.2f} steps/s{against}, its threads {self.busy:.0%} busy"
        if self.threads is not None:
            return (
                f"the CPU is shared with another process ({seen}); continuing on "
                f"{self.threads} thread (set train.threads to choose)"
            )
        return (
            f"the step rate collapsed: the CPU is shared with another process ({seen}); stop "
            "the other job, or expect fewer steps in the time budget"
        )

    def metrics(self) -> dict[str, float]:
        row = {"cpu_shared_rate": self.rate, "cpu_busy": self.busy}
        return row | ({"threads": float(self.threads)} if self.threads is not None else {})


@dataclass
class CpuWatch:
    """Notices another process taking the cores of a training run, from the run's own steps.

    ``update(wall_s, cpu_s)`` after each step with its wall and CPU seconds. Every ``window_s``
    seconds of steps it compares the window's rate with the first window's (the reference) and
    the threads' share of the CPU (CPU seconds / wall seconds x threads; about 94% when toiny
    has both cores of a quiet machine, NOTES.md). A multi-threaded run whose threads are less
    than ``min_busy`` busy is asked to go on one thread: OpenMP threads wait at every
    parallel region for the one that lost its core. A one-thread run whose rate fell below
    ``fraction`` of its reference is told once."""

    threads: int
    window_s: float = 20.0
    min_busy: float = 0.75
    fraction: float = 0.5
    reference: float | None = None
    _window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # steps, wall, cpu
    _told: bool = False

    def update(self, wall_s: float, cpu_s: float) -> Slowdown | None:
        w = self._window
        w[0], w[1], w[2] = w[0] + 1, w[1] + wall_s, w[2] + cpu_s
        if w[1] < self.window_s:
            return None
        rate, busy = w[0] / w[1], w[2] / (w[1] * self.threads)
        self._window = [0.0, 0.0, 0.0]
        reference = self.reference
        if self.threads > 1 and busy < self.min_busy:
            self.threads, self.reference = 1, None  # a new reference on one thread
            return Slowdown(rate, reference, busy, 1)
        if reference is None:
            self.reference = rate
        elif self.threads == 1 and not self._told and rate < self.fraction * reference:
            self._told = True
            return Slowdown(rate, reference, busy, None)
        return None
