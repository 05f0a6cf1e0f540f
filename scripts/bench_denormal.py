"""Does a trained run's step slow down on denormal floats? Times forward + backward of a run's
final weights on one training batch with torch.set_flush_denormal off, on, off.

    OMP_NUM_THREADS=1 python scripts/bench_denormal.py outputs/RUN [outputs/OTHER ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from arcdiff.data.dataset import stream_from_config
from arcdiff.runs.checkpoint import load_run_model
from arcdiff.runs.paths import checkpoint_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        model, cfg, _ = load_run_model(checkpoint_path(run, "final"), use_ema=False)
        model.train()
        batch = stream_from_config(cfg.data).sample(cfg.train.batch_size)
        b = len(batch)
        inputs = (batch.inputs, batch.outputs, torch.zeros(b), batch.task, batch.dihedral)
        for flush in (False, True, False):
            torch.set_flush_denormal(flush)
            model(*inputs).logits.sum().backward()  # warm-up
            began = time.perf_counter()
            for _ in range(args.steps):
                model(*inputs).logits.sum().backward()
            ms = (time.perf_counter() - began) / args.steps * 1000
            print(f"{run.name}: flush_denormal={flush!s:5} {ms:.0f} ms per forward+backward")


if __name__ == "__main__":
    main()
