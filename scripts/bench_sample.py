"""Sampling throughput: test inputs x augmentations decoded per second.

    .venv/bin/python scripts/bench_sample.py                         # toiny_aa1, 32 steps, 8 augs
    .venv/bin/python scripts/bench_sample.py --config smol_aa1 --limit 400 --json out.json

Builds the preset's model at its real size (weights from ``--run DIR``'s final checkpoint when
given, else freshly initialised: the compute per step is the same), loads the preset's eval
split with its ``data.max_size`` filter, and times ``predict_tasks`` (the evaluator's batched
sampler: every test input under ``--num-augs`` augmentations, ``--num-steps`` steps, two passes
per step when the model self-conditions, canvases cropped as evaluate crops them) end to end,
after a warm-up batch. Prints decoded samples per second, model forward passes per second and
the time a full evaluation of the split takes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from arcdiff.config import load_config
from arcdiff.data.dataset import stream_from_config
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.predict import predict_tasks
from arcdiff.runs.checkpoint import build_model, load_run_model
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.paths import checkpoint_path, select_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="toiny_aa1")
    parser.add_argument("--run", type=Path, help="use this run's final checkpoint")
    parser.add_argument("--num-steps", type=int, default=32)
    parser.add_argument("--num-augs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, help="first N tasks of the split")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--crop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop canvases to each batch's largest grid (default: as evaluate, when the run "
        "trained with size buckets)",
    )
    args = parser.parse_args()
    device = select_device(args.device)
    setup_cpu(args.threads, device)  # as evaluate: threads, denormals, the allocator

    if args.run:
        model, cfg, state = load_run_model(checkpoint_path(args.run, "final"))
        task_ids = state["task_ids"]
    else:
        cfg = load_config(args.config)
        task_ids = stream_from_config(cfg.data).task_ids
        torch.manual_seed(0)
        model = build_model(cfg, len(task_ids)).eval()
    model = model.to(device)
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    tasks = load_tasks(cfg.eval.split, max_size=cfg.data.max_size, limit=args.limit)
    index = {task_id: i for i, task_id in enumerate(task_ids)}
    crop = cfg.data.bucket_window > 1 if args.crop is None else args.crop
    settings = dict(
        crop=crop,
        num_steps=args.num_steps,
        maj=True,
        num_augs=args.num_augs,
        batch_size=args.batch_size,
        device=device,
    )
    predict_tasks(model, diffusion, tasks.tasks[:4], index, **settings)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_tasks(model, diffusion, tasks.tasks, index, **settings)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start

    samples = sum(len(t.test_inputs) for t in tasks) * args.num_augs
    passes = 2 if model.self_condition else 1
    result = {
        "config": cfg.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "params": model.num_params(),
        "tasks": len(tasks),
        "samples": samples,
        "num_steps": args.num_steps,
        "passes_per_step": passes,
        "crop": crop,
        "wall_s": wall,
        "samples_per_s": samples / wall,
        "example_forwards_per_s": samples * args.num_steps * passes / wall,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
    }
    table = Table(title=f"sampling {cfg.name} on {device} ({result['threads']} threads)")
    for key in (
        "tasks",
        "samples",
        "num_steps",
        "passes_per_step",
        "crop",
        "wall_s",
        "samples_per_s",
        "example_forwards_per_s",
    ):
        value = result[key]
        shown = str(value) if isinstance(value, bool) else f"{value:,}"
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else shown)
    Console().print(table)
    print(
        f"{cfg.name}: {result['samples_per_s']:.2f} test inputs x augmentations per second; "
        f"the {len(tasks)}-task split with {args.num_augs} augmentations x {args.num_steps} "
        f"steps takes {wall:.1f} s on {device}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
