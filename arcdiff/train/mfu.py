"""The two sides of MFU (scripts/bench_train.py): the matmul FLOPs of one training step of the
denoiser, the matmul peak of the machine, measured, and the rates of timed steps against it.

B examples on a canvas of side S (the batch's, cropped by size buckets, not data.max_size) hold
N = 1 + 2 S^2 tokens; d = d_model, h = int(d * mlp_ratio), L layers, 64 noise frequencies::

    linear, per token, per layer   2 (3d^2 + d^2 + 2dh)            qkv, proj, fc1, fc2
    attention, per example, layer  2 * 2 N^2 d                     q k^T and the weighted sum
    heads, per example             2 S^2 d 10 + 2 d 2S              colour head, size head
    noise MLP, per example         2 (128 d + d^2)
    self-cond projection           2 S^2 10 d                       second pass only
    F  = B [L (2N (4d^2 + 2dh) + 4 N^2 d) + 20 S^2 d + 4 S d + 2 (128 d + d^2)]
    step without SC = 3 F                                          forward + backward (2x)
    step with SC    = 3 (F + 20 B S^2 d) + F                        + the no-grad first pass

Embedding lookups, norms, activations, softmax, loss and the optimizer are not counted.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from arcdiff.config import Config
from arcdiff.model.denoiser import NUM_COLOURS

NOISE_FREQS = 64  # NoiseLevelEmbedding's default: its MLP reads 2 * 64 features


@dataclass(frozen=True)
class StepFlops:
    forward: float  # one forward without the self-conditioning input
    no_sc: float  # training step without self-conditioning
    sc: float  # training step with the no-grad first pass


def model_flops(cfg: Config, batch_size: int, side: int) -> StepFlops:
    """Matmul FLOPs of one training step on ``batch_size`` canvases of ``side`` x ``side``."""
    s, d, layers = side, cfg.model.d_model, cfg.model.n_layers
    h = int(d * cfg.model.mlp_ratio)
    n = 1 + 2 * s * s
    linear = 2 * n * (4 * d * d + 2 * d * h)  # per layer, per example
    attention = 2 * 2 * n * n * d
    heads = 2 * s * s * d * NUM_COLOURS + 2 * d * 2 * s
    noise = 2 * (2 * NOISE_FREQS * d + d * d)
    forward = batch_size * (layers * (linear + attention) + heads + noise)
    sc_proj = batch_size * 2 * s * s * NUM_COLOURS * d
    return StepFlops(forward=forward, no_sc=3 * forward, sc=3 * (forward + sc_proj) + forward)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_model() -> str:
    """The 'model name' of /proc/cpuinfo (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def matmul_peak(
    device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    """Best and median GFLOP/s of torch.matmul on (n, n) @ (n, n), per size."""
    out: dict[str, Any] = {
        "taken_at": now(),
        "dtype": str(dtype).removeprefix("torch."),
        "sizes": {},
    }
    start = time.perf_counter()
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.matmul(a, b)
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        one = time.perf_counter() - t0
        calls = max(1, min(50, int(0.2 / max(one, 1e-6))))  # a timing lasts >= ~0.2 s
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, b)
            sync(device)
            rates.append(2 * n**3 * calls / (time.perf_counter() - t0) / 1e9)
        out["sizes"][str(n)] = {
            "best_gflops": max(rates),
            "median_gflops": statistics.median(rates),
            "calls_per_timing": calls,
            "runs_gflops": rates,
        }
        del a, b
    out["best_gflops"] = max(s["best_gflops"] for s in out["sizes"].values())
    out["seconds"] = time.perf_counter() - start
    return out


WHICH = ("mean", "median", "best")
MIXED = ("mean_s", "mean_flops", "mean_tokens")  # what the SC mix averages


def step_rates(
    which: str, seconds: float, per_step: dict[str, float], batch: int, peak: float
) -> dict[str, float]:
    """Examples, tokens and model FLOPs per second of a step taking ``seconds``."""
    flops_per_s = per_step[f"{which}_flops"] / seconds
    return {
        f"{which}_examples_per_s": batch / seconds,
        f"{which}_tokens_per_s": per_step[f"{which}_tokens"] / seconds,
        f"{which}_model_flops_per_s": flops_per_s,
        f"{which}_mfu": flops_per_s / peak,
    }


def summarise(runs: list[dict[str, float]], batch: int, peak: float) -> dict[str, Any]:
    """Per kind: "mean" = totals over the timed steps (a run's throughput, whatever canvas
    each batch had), "median" = the median step, "best" = the step with the most FLOP/s."""
    totals = [r["total"] for r in runs]
    by_time = sorted(runs, key=lambda r: r["total"])
    chosen = {
        "median": by_time[len(runs) // 2],
        "best": max(runs, key=lambda r: r["flops"] / r["total"]),
    }
    out: dict[str, Any] = {
        "mean_s": sum(totals) / len(runs),
        "mean_flops": sum(r["flops"] for r in runs) / len(runs),
        "mean_tokens": sum(r["tokens"] for r in runs) / len(runs),
    }
    for which, r in chosen.items():
        out.update({f"{which}_s": r["total"], f"{which}_flops": r["flops"]})
        out[f"{which}_tokens"] = r["tokens"]
    for which in WHICH:
        out.update(step_rates(which, out[f"{which}_s"], out, batch, peak))
    out["worst_s"] = max(totals)
    for phase in ("data_s", "fwd_bwd_s", "optim_s", "cpu_s", "faults"):
        out[f"median_{phase}"] = statistics.median(r[phase.removesuffix("_s")] for r in runs)
    # CPU seconds over wall seconds x threads: below 1 when other jobs take the cores
    out["cpu_busy"] = sum(r["cpu"] for r in runs) / sum(totals) / torch.get_num_threads()
    out["runs_s"] = totals
    out["sides"] = [r["side"] for r in runs]
    return out
