"""Throughput of the training data stream on ONE CPU core.

    .venv/bin/python scripts/bench_data.py                      # or: make bench
    .venv/bin/python scripts/bench_data.py --json outputs/bench_data.json

Builds the stream the default config trains on (aa1:train + aa1:eval at max_size 30, via
``stream_from_config(DataConfig(max_size=30))``), warms it up, then reports augmented,
encoded training examples per second as the median of ``--repeats`` timings of
``stream.sample(B)`` for B = 64, 256 and 1024. In the same run it times the single-grid path
(``Augmentation.apply`` + ``encode_grids`` one example at a time) and prints the ratio
batched / single. The target is 20,000 examples/s at batch 256 on one core.
"""

from __future__ import annotations

import os

# one core: thread pools read these when numpy and torch are imported, so set them first
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from arcdiff.config import DataConfig
from arcdiff.data.augment import sample_augmentation
from arcdiff.data.dataset import TrainingStream, stream_from_config
from arcdiff.data.encode import encode_grids

BATCH_SIZES = (64, 256, 1024)
HEADLINE_BATCH = 256
TARGET = 20_000  # examples/s at batch 256 on one core


def pin_to_one_core() -> str:
    """Restrict this process to its first allowed CPU; returns a description of the pinning."""
    torch.set_num_threads(1)
    if not hasattr(os, "sched_setaffinity"):
        return "threads=1 (no sched_setaffinity on this platform)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"cpu {cpu}, threads=1"


def time_batched(
    stream: TrainingStream, batch_size: int, repeats: int, examples: int
) -> list[float]:
    """examples/s of ``stream.sample(batch_size)``, one figure per repetition."""
    calls = max(1, examples // batch_size)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            stream.sample(batch_size)
        rates.append(calls * batch_size / (time.perf_counter() - start))
    return rates


def time_single(stream: TrainingStream, repeats: int, examples: int, seed: int = 0) -> list[float]:
    """examples/s of augmenting and encoding one (input, output) pair at a time."""
    pairs = stream.train_pool.flat + stream.eval_pool.flat
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(repeats):
        picks = rng.integers(0, len(pairs), size=examples)
        start = time.perf_counter()
        for p in picks:
            aug = sample_augmentation(rng, permute_background=stream.permute_background)
            encode_grids([aug.apply(pairs[p].input)], stream.max_size)
            encode_grids([aug.apply(pairs[p].output)], stream.max_size)
        rates.append(examples / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per path")
    parser.add_argument(
        "--examples", type=int, default=16384, help="examples per repetition (batched path)"
    )
    parser.add_argument(
        "--single-examples", type=int, default=2000, help="examples per repetition (single path)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    console = Console()
    pinning = pin_to_one_core()
    start = time.perf_counter()
    stream = stream_from_config(DataConfig(max_size=30))
    build_s = time.perf_counter() - start
    print(
        f"stream: {stream.num_tasks} tasks, {stream.num_pairs} pairs, max_size {stream.max_size}"
        f" (built in {build_s:.2f} s) | {pinning}"
        f" | numpy {np.__version__}, torch {torch.__version__}"
    )

    for batch_size in BATCH_SIZES:  # warm-up: index tables, allocator, caches
        time_batched(stream, batch_size, repeats=1, examples=4 * batch_size)
    time_single(stream, repeats=1, examples=200)

    batched = {b: time_batched(stream, b, args.repeats, args.examples) for b in BATCH_SIZES}
    single = time_single(stream, args.repeats, args.single_examples)
    single_median = statistics.median(single)

    table = Table(title="augmented + encoded training examples/s, 1 core (median, min, max)")
    for column in ("path", "batch", "ex/s", "min", "max", "ms/batch", "vs single"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for b, rates in batched.items():
        median = statistics.median(rates)
        table.add_row(
            "stream.sample(B)",
            str(b),
            f"{median:,.0f}",
            f"{min(rates):,.0f}",
            f"{max(rates):,.0f}",
            f"{1000 * b / median:.2f}",
            f"{median / single_median:.1f}x",
        )
    table.add_row(
        "single grid",
        "1",
        f"{single_median:,.0f}",
        f"{min(single):,.0f}",
        f"{max(single):,.0f}",
        f"{1000 / single_median:.3f}",
        "1.0x",
    )
    console.print(table)

    headline = statistics.median(batched[HEADLINE_BATCH])
    meets = headline >= TARGET
    print(f"examples/s (batch {HEADLINE_BATCH}, 1 core): {headline:,.0f}")
    print(f"target {TARGET:,}/s: {'met' if meets else 'NOT met'}")

    if args.json is not None:
        report = {
            "examples_per_s": {str(b): statistics.median(r) for b, r in batched.items()},
            "examples_per_s_runs": {str(b): r for b, r in batched.items()},
            "single_examples_per_s": single_median,
            "batched_over_single": headline / single_median,
            "headline_batch": HEADLINE_BATCH,
            "target": TARGET,
            "meets_target": meets,
            "num_tasks": stream.num_tasks,
            "num_pairs": stream.num_pairs,
            "max_size": stream.max_size,
            "pinning": pinning,
            "cpu": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
