"""Size buckets against full canvases: training examples/s and sampling items/s, in one run.

    .venv/bin/python scripts/bench_buckets.py                    # toiny_aa1, 1 thread
    .venv/bin/python scripts/bench_buckets.py --steps 60 --json outputs/bench_buckets.json

Training: one model and optimizer; steps drawn from a full-canvas stream and from a stream
with ``data.bucket_window`` (default 16) alternate, so both see the same machine load. Each
step is the library's TrainStep: sample, corrupt, forward, loss, backward, clip, AdamW
(self-conditioning off, so every step
costs the same). ``--warmup`` steps of each kind are not timed; rates are total examples over
total time, on the wall clock and on this process's CPU clock (``time.process_time``; with
one thread, the rate a quiet machine would give even when other jobs share the cores).
Bucketed steps visit whole windows, so time at least one window (``--steps`` >= window).

Sampling: the evaluator's ``predict_tasks`` on the first ``--tasks`` aa1 eval tasks (grids
<= data.max_size), 8 augmentations, ``--sample-steps`` steps with two passes, with and
without canvas cropping, alternated ``--repeats`` times; the best time of each is reported.
The model is freshly initialised: speed does not depend on what it has learnt.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from arcdiff.config import load_config
from arcdiff.data.dataset import stream_from_config
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.predict import predict_tasks
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.optim import make_optimizer
from arcdiff.train.step import TrainStep


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_rates(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    cfg = load_config(args.config)
    streams = {
        "full canvas": stream_from_config(cfg.data),
        f"buckets of {args.window}": stream_from_config(
            load_config(args.config, [f"data.bucket_window={args.window}"]).data
        ),
    }
    torch.manual_seed(0)
    model = build_model(cfg, streams["full canvas"].num_tasks)
    device = torch.device("cpu")
    optimizer = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay, device)
    # the library's step as the config builds it; no scheduler or EMA, as before
    take_step = TrainStep.from_config(cfg, model, optimizer, device=device)
    generator = torch.Generator().manual_seed(0)

    def step(stream) -> None:  # self-conditioning off: every step costs the same
        take_step(
            stream.sample,
            cfg.train.batch_size,
            generator,
            generator,
            0,
            device=device,
            self_cond=False,
        )

    totals = {name: [0.0, 0.0] for name in streams}
    for i in range(args.warmup + args.steps):
        for name, stream in streams.items():
            wall, cpu = timed(lambda stream=stream: step(stream))
            if i >= args.warmup:
                totals[name][0] += wall
                totals[name][1] += cpu
    examples = cfg.train.batch_size * args.steps
    return {
        name: {"wall": examples / wall, "cpu": examples / cpu}
        for name, (wall, cpu) in totals.items()
    }


def sample_rates(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    cfg = load_config(args.config)
    tasks = load_tasks("aa1:eval", max_size=cfg.data.max_size, limit=args.tasks, missing_ok=True)
    torch.manual_seed(0)
    model = build_model(cfg, len(tasks)).eval()
    index = {t.id: i for i, t in enumerate(tasks)}
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    items = sum(len(t.test_inputs) for t in tasks) * 8
    totals = {"full canvas": [0.0, 0.0], "cropped": [0.0, 0.0]}
    for _ in range(args.repeats):
        for name, crop in (("full canvas", False), ("cropped", True)):
            wall, cpu = timed(
                lambda crop=crop: predict_tasks(
                    model, diffusion, tasks.tasks, index, num_steps=args.sample_steps, crop=crop
                )
            )
            totals[name][0] += wall
            totals[name][1] += cpu
    n = items * args.repeats
    return {name: {"wall": n / wall, "cpu": n / cpu} for name, (wall, cpu) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="toiny_aa1")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32, help="timed training steps of each")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=20, help="eval tasks for the sampling part")
    parser.add_argument("--sample-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    train = train_rates(args)
    sample = sample_rates(args)
    table = Table(title=f"{args.config}: size buckets vs full canvases ({args.threads} thread)")
    for column in ("what", "clock", "full canvas", "buckets / cropped", "ratio"):
        table.add_column(column, justify="right")
    for what, rates in (("train examples/s", train), ("sample items/s", sample)):
        full, other = rates.values()
        for clock in ("wall", "cpu"):
            ratio = other[clock] / full[clock]
            row = (f"{full[clock]:.2f}", f"{other[clock]:.2f}", f"{ratio:.2f}x")
            table.add_row(what, clock, *row)
    console.print(table)
    if args.json:
        record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args)}
        record |= {"train_examples_per_s": train, "sample_items_per_s": sample}
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
