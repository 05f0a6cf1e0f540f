"""Training-step throughput and MFU of a preset, against a matmul peak measured in the same run.

    .venv/bin/python scripts/bench_train.py                              # toiny_aa1, defaults
    .venv/bin/python scripts/bench_train.py --config smol_aa1 --batch-size 8 --steps 3
    .venv/bin/python scripts/bench_train.py --threads 1 --json outputs/bench_train_t1.json
    .venv/bin/python scripts/bench_train.py --compile --profile

1. Peak: the best GFLOP/s of ``torch.matmul`` on square matrices (float32 on CPU at n = 1024,
   2048; bf16 on CUDA at n = 4096, 8192 when the trainer would autocast, bf16 on the CPU at
   1024, 2048 with train.cpu_bf16), 2 n^3 FLOPs each, on
   the threads the training uses. It is measured before and after the steps (other jobs share
   the machine) and MFU is taken against the higher of the two.
2. Steps: the stream, model, optimizer, LR schedule, EMA and diffusion are built as
   ``arcdiff.train.trainer.train`` builds them, and each step is the library's own
   ``arcdiff.train.step.TrainStep``: sample + corrupt, forward, loss, backward, clip, the
   optimizer (train.optimizer), scheduler and EMA (no validation, logging or checkpoints).
   Steps with and without the self-conditioning first pass alternate, so both see the same
   machine load; ``--warmup`` steps of each are not timed. The mean, median and best of
   ``--steps`` timed steps of each kind
   are reported, plus the mix the trainer runs (SC on ``train.self_cond_prob`` of the steps).

Model FLOPs per step are analytic (arcdiff/train/mfu.py: qkv, proj, MLP, attention, heads)
and taken on each step's own canvas: with size buckets (data.bucket_window) a batch is cropped to
its largest grid, so a step of 3x3 grids costs far less than one of max_size x max_size. "mean"
rows are totals (all timed steps' examples and FLOPs over their seconds): the throughput of a
run; "median" and "best" are per-step rates. ``--set train.cpu_bf16=true`` autocasts the steps to
bf16 on the CPU (as the trainer) and measures the peak in bf16; ``--set model.d_model=256
--set model.n_heads=8`` compares widths.

The phase table gives each step's CPU seconds (all threads), "busy" = CPU seconds / (wall
seconds x threads), below 100% when other jobs hold the cores, and minor page faults (fresh
pages for large tensors glibc malloc returned to the OS; compare with
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from arcdiff.config import Config, apply_overrides, config_to_dict, load_config
from arcdiff.data.dataset import Batch, TrainingStream, stream_from_config
from arcdiff.runs.checkpoint import build_model
from arcdiff.runs.cpu import setup_cpu
from arcdiff.runs.device import check_cpu_bf16, seeded_generator
from arcdiff.runs.paths import select_device
from arcdiff.train import mfu
from arcdiff.train.optim import lr_factor, make_optimizer
from arcdiff.train.step import TrainStep

CPU_PEAK_SIZES = (1024, 2048)
CUDA_PEAK_SIZES = (4096, 8192)


def rate(x: float) -> str:
    """One decimal from 10 up, three significant digits below (0.366 examples/s)."""
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


@dataclass
class Trainee:
    """What one training step touches, built as arcdiff.train.trainer.train builds it."""

    cfg: Config
    stream: TrainingStream
    model: nn.Module
    take_step: TrainStep  # the library's own step, timed as the trainer runs it
    noise_gen: torch.Generator
    device: torch.device
    step: int = 0


def build_trainee(cfg: Config, device: torch.device, compile_model: bool) -> Trainee:
    torch.manual_seed(cfg.train.seed)
    stream = stream_from_config(cfg.data)
    model = build_model(cfg, stream.num_tasks).to(device)
    t = cfg.train
    optimizer = make_optimizer(
        model, t.lr, t.weight_decay, device, kind=t.optimizer, muon_lr=t.muon_lr
    )
    take_step = TrainStep.from_config(  # the trainer's step (self_cond is set per step)
        cfg,
        model,
        optimizer,
        device=device,
        forward=torch.compile(model) if compile_model else model,
        scheduler=torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, t.warmup_steps, t.max_steps, t.lr_schedule)
        ),
        ema=copy.deepcopy(model).requires_grad_(False),
        sync=lambda: mfu.sync(device),
    )
    return Trainee(
        cfg=cfg,
        stream=stream,
        model=model,
        take_step=take_step,
        noise_gen=seeded_generator(device, cfg.train.seed * 1000),  # the trainer's rank 0
        device=device,
    )


def train_step(t: Trainee, self_cond: bool) -> dict[str, float]:
    """One optimizer step as the trainer takes it; seconds of each phase, the loss, and the
    model FLOPs and tokens of the canvases its batches were cropped to."""
    sides: list[int] = []

    def draw(n: int) -> Batch:
        batch = t.stream.sample(n)
        sides.append(batch.inputs.shape[-1])  # (B, S, S), S <= data.max_size
        return batch

    mfu.sync(t.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    r = t.take_step(
        draw,
        t.cfg.train.batch_size,
        t.noise_gen,
        t.noise_gen,
        t.step,
        device=t.device,
        self_cond=self_cond,
    )
    t.step += 1
    end = time.perf_counter()
    cpu = time.process_time() - cpu_start  # this process's CPU seconds, all its threads
    # first touches of fresh pages: large tensors malloc hands back to the OS and maps again
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start
    micro = t.cfg.train.batch_size // t.cfg.train.grad_accum
    costs = [mfu.model_flops(t.cfg, micro, side) for side in sides]
    return {
        "total": end - start,
        **r.seconds,
        "cpu": cpu,
        "faults": faults,
        "loss": r.loss,
        "side": max(sides),
        "flops": sum(f.sc if self_cond else f.no_sc for f in costs),
        "tokens": sum(micro * (1 + 2 * side * side) for side in sides),
    }


def time_steps(t: Trainee, steps: int, warmup: int, self_cond_ok: bool) -> dict[str, Any]:
    """Alternate SC and no-SC steps; the first ``warmup`` of each kind are not kept."""
    kinds = ["no_sc", "sc"] if self_cond_ok else ["no_sc"]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    taken_at = mfu.now()
    start = time.perf_counter()
    for i in range(warmup + steps):
        for kind in kinds:
            r = train_step(t, self_cond=kind == "sc")
            if i >= warmup:
                runs[kind].append(r)
    return {"taken_at": taken_at, "seconds": time.perf_counter() - start, "runs": runs}


def profile_steps(t: Trainee, self_cond_ok: bool, top: int, console: Console) -> list[dict]:
    """torch.profiler over one step of each kind; the ops with the most self time on the
    device that runs them (the GPU's kernel time on CUDA, where CPU time is mostly launches)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    on_gpu = t.device.type == "cuda"
    if on_gpu:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        train_step(t, self_cond=False)
        if self_cond_ok:
            train_step(t, self_cond=True)
    averages = prof.key_averages()
    field, unit = ("self_device_time_total", "GPU") if on_gpu else ("self_cpu_time_total", "CPU")
    total = sum(getattr(e, field) for e in averages) or 1.0
    rows = sorted(averages, key=lambda e: getattr(e, field), reverse=True)[:top]
    table = Table(title=f"torch.profiler, one no-SC + one SC step: top ops by self {unit} time")
    table.add_column("op", overflow="fold")
    for column in ("calls", f"self {unit} ms", "share"):
        table.add_column(column, justify="right")
    out = []
    for e in rows:
        ms, share = getattr(e, field) / 1000, getattr(e, field) / total
        table.add_row(e.key, str(e.count), f"{ms:,.1f}", f"{share:.1%}")
        out.append({"op": e.key, "calls": e.count, f"self_{unit.lower()}_ms": ms, "share": share})
    console.print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="toiny_aa1", help="config file or preset name")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a config field: section.key=value (repeatable)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="train.batch_size override")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each kind first")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads (default: as the trainer)"
    )
    parser.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: as the trainer)")
    parser.add_argument("--peak-repeats", type=int, default=5, help="timings per matmul size")
    parser.add_argument(
        "--profile", action="store_true", help="also profile one step of each kind (torch.profiler)"
    )
    parser.add_argument("--profile-top", type=int, default=15, help="ops listed by --profile")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    console = Console()
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    if args.batch_size is not None:
        cfg = apply_overrides(cfg, [f"train.batch_size={args.batch_size}"])
    device = select_device(args.device)
    setup_cpu(args.threads, device)  # as the trainer: threads, denormals, the allocator
    check_cpu_bf16(device, cfg.train.cpu_bf16)
    on_cpu = device.type == "cpu"
    bf16 = (cfg.train.bf16 and device.type == "cuda") or (cfg.train.cpu_bf16 and on_cpu)
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    peak_sizes = CUDA_PEAK_SIZES if device.type == "cuda" else CPU_PEAK_SIZES
    threads = torch.get_num_threads()
    cpu = mfu.cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    console.print(
        f"torch {torch.__version__} | device {device}{f' ({gpu})' if gpu else ''} | "
        f"threads {threads} (of {os.cpu_count()} CPUs) | CPU {cpu} | "
        f"load avg {os.getloadavg()[0]:.2f} | compile {args.compile} | "
        f"autocast {'bf16' if bf16 else 'off'}"
    )

    peak_before = mfu.matmul_peak(device, peak_dtype, peak_sizes, args.peak_repeats)
    console.print(
        f"matmul peak ({peak_before['dtype']}) at {peak_before['taken_at']}: "
        f"{peak_before['best_gflops']:,.1f} GFLOP/s"
    )

    start = time.perf_counter()
    trainee = build_trainee(cfg, device, args.compile)
    build_s = time.perf_counter() - start
    model = trainee.model
    self_cond_ok = bool(getattr(model, "self_condition", False))
    s, b = cfg.data.max_size, cfg.train.batch_size
    tokens_per_example = 1 + 2 * s * s  # at most: size buckets crop the canvas
    console.print(
        f"[bold]{cfg.name}[/]: {model.num_params():,} parameters, {trainee.stream.num_tasks} "
        f"tasks, max_size {s} (<= {tokens_per_example} tokens/example), batch {b} "
        f"(grad_accum {cfg.train.grad_accum}), d_model {cfg.model.d_model}, "
        f"{cfg.model.n_layers} layers (built in {build_s:.1f} s)"
    )

    timing = time_steps(trainee, args.steps, args.warmup, self_cond_ok)
    peak_after = mfu.matmul_peak(device, peak_dtype, peak_sizes, args.peak_repeats)
    peak = max(peak_before["best_gflops"], peak_after["best_gflops"]) * 1e9

    p_sc = cfg.train.self_cond_prob if self_cond_ok else 0.0
    kinds = {kind: mfu.summarise(runs, b, peak) for kind, runs in timing["runs"].items()}
    if "sc" in kinds:  # the trainer's mix of the two kinds, from their totals
        mix = {k: (1 - p_sc) * kinds["no_sc"][k] + p_sc * kinds["sc"][k] for k in mfu.MIXED}
        kinds["mix"] = {**mix, **mfu.step_rates("mean", mix["mean_s"], mix, b, peak)}
    labels = {"no_sc": "no SC", "sc": "SC (+1 fwd)", "mix": f"mix p={p_sc:g}"}

    table = Table(
        title=f"{cfg.name} training step, batch {b}, {device}, {threads} threads, "
        f"{args.steps} timed steps of each kind"
    )
    for column in ("step", "", "s/step", "ex/s", "tokens/s", "GFLOP/step", "GFLOP/s", "MFU"):
        table.add_column(column, justify="left" if column in ("step", "") else "right")
    for kind, summary in kinds.items():
        shown = [w for w in mfu.WHICH if f"{w}_s" in summary]  # the mix has totals only
        for which in shown:
            table.add_row(
                labels[kind] if which == shown[0] else "",
                which,
                f"{summary[f'{which}_s']:.3f}",
                rate(summary[f"{which}_examples_per_s"]),
                f"{summary[f'{which}_tokens_per_s']:,.0f}",
                f"{summary[f'{which}_flops'] / 1e9:,.2f}",
                f"{summary[f'{which}_model_flops_per_s'] / 1e9:,.1f}",
                f"{summary[f'{which}_mfu']:.1%}",
                end_section=which == shown[-1],
            )
    console.print(table)

    phase_table = Table(title="median seconds per phase of a step, CPU use, page faults")
    columns = ("step", "data", "fwd+bwd", "optim+EMA", "total", "CPU s", "busy", "faults")
    for column in columns:
        phase_table.add_column(column, justify="left" if column == "step" else "right")
    for kind in timing["runs"]:
        summary = kinds[kind]
        phase_table.add_row(
            labels[kind],
            f"{summary['median_data_s']:.3f}",
            f"{summary['median_fwd_bwd_s']:.3f}",
            f"{summary['median_optim_s']:.3f}",
            f"{summary['median_s']:.3f}",
            f"{summary['median_cpu_s']:.3f}",
            f"{summary['cpu_busy']:.0%}",
            f"{summary['median_faults']:,.0f}",
        )
    console.print(phase_table)

    peak_table = Table(title=f"matmul peak, {peak_before['dtype']}, {threads} threads (GFLOP/s)")
    for column in ("when", "taken at", "n", "best", "median"):
        peak_table.add_column(column, justify="left" if column in ("when", "taken at") else "right")
    for when, result in (("before steps", peak_before), ("after steps", peak_after)):
        for n, r in result["sizes"].items():
            peak_table.add_row(
                when,
                result["taken_at"],
                n,
                f"{r['best_gflops']:,.1f}",
                f"{r['median_gflops']:,.1f}",
            )
    console.print(peak_table)

    profile = (
        profile_steps(trainee, self_cond_ok, args.profile_top, console) if args.profile else None
    )

    head = kinds.get("mix", kinds["no_sc"])
    console.print(
        f"steps timed at {timing['taken_at']} ({timing['seconds']:.1f} s); peaks at "
        f"{peak_before['taken_at']} and {peak_after['taken_at']}; load avg "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(
        f"{cfg.name} batch {b} on {device} ({threads} threads, torch {torch.__version__}): "
        f"{rate(head['mean_examples_per_s'])} examples/s, "
        f"{head['mean_tokens_per_s']:,.0f} tokens/s, "
        f"{head['mean_model_flops_per_s'] / 1e9:,.1f} model GFLOP/s = "
        f"{head['mean_mfu']:.1%} MFU of the measured {peak / 1e9:,.1f} GFLOP/s "
        f"{peak_before['dtype']} matmul peak (all timed steps, "
        f"{'trainer SC mix' if 'mix' in kinds else 'no SC'})"
    )

    if args.json is not None:
        report = {
            "config": cfg.name,
            "overrides": overrides,
            "resolved_config": config_to_dict(cfg),
            "device": str(device),
            "gpu": gpu,
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "compile": args.compile,
            "autocast_bf16": bf16,
            "mean_mfu": head["mean_mfu"],  # the headline line's MFU
            "median_mfu": kinds["no_sc"]["median_mfu"],  # the median step without SC
            "batch_size": b,
            "tokens_per_example": tokens_per_example,
            "num_params": model.num_params(),
            "num_tasks": trainee.stream.num_tasks,
            "build_s": build_s,
            "steps": args.steps,
            "warmup": args.warmup,
            "self_cond_prob": p_sc,
            "flops_forward_full_canvas": mfu.model_flops(cfg, b, s).forward,
            "peak_before": peak_before,
            "peak_after": peak_after,
            "peak_flops_per_s": peak,
            "steps_taken_at": timing["taken_at"],
            "steps_seconds": timing["seconds"],
            "load_avg_1min": os.getloadavg()[0],
            "kinds": kinds,
            "losses": {k: [r["loss"] for r in v] for k, v in timing["runs"].items()},
            "profile": profile,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not all(math.isfinite(r["loss"]) for v in timing["runs"].values() for r in v):
        console.print("[red]warning: a non-finite loss was seen during the benchmark[/]")


if __name__ == "__main__":
    main()
