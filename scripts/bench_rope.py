"""What 2D rotary positions cost: the toiny denoiser's forward + backward with learned row/column
embeddings against rotary positions (model.rope), timed alternately in one process.

    OMP_NUM_THREADS=1 python scripts/bench_rope.py --rounds 4 --steps 10

Prints the median seconds per step of each and their ratio. One thread unless --threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arcdiff.model.denoiser import Denoiser, example_inputs


def step_seconds(model: Denoiser, args: tuple[torch.Tensor, ...], steps: int) -> float:
    began = time.perf_counter()
    for _ in range(steps):
        model(*args).logits.sum().backward()
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--side", type=int, default=8, help="canvas side (toiny's mean is ~8)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, s = args.batch, args.side
    inputs = example_inputs(b, s)
    common = dict(num_tasks=257, max_size=10, d_model=128, n_heads=4, n_layers=4)
    models = {
        "learned row/column": Denoiser(**common, self_condition=False),
        "rope": Denoiser(**common, self_condition=False, rope=True, abs_pos=False),
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        step_seconds(model, inputs, 2)  # warm-up
    for _ in range(args.rounds):  # alternate, so both see the same load
        for name, model in models.items():
            times[name].append(step_seconds(model, inputs, args.steps))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in medians.items():
        print(f"{name:>20}: {t * 1000:.1f} ms per forward+backward (B={b}, {s}x{s} canvas)")
    print(f"rope / learned: {medians['rope'] / medians['learned row/column']:.3f}")


if __name__ == "__main__":
    main()
