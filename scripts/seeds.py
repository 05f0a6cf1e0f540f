"""A recipe over seeds: per-seed rows, mean +- sd, and paired comparisons over tasks.

Every seed is the preset (``--config``) with ``--set`` overrides and ``train.seed`` =
``data.seed`` = the seed, trained by ``arcdiff pipeline`` for ``--minutes`` (or ``--steps``,
the machine-independent budget) on one thread, ``--jobs`` processes at a time (2 on a 2-core
machine), with this checkout's code (its commit is recorded: run studies from a worktree at a
fixed commit). ``--snapshots 5,10,15,30`` also saves and evaluates those minutes' checkpoints
(the score-versus-time curve, ``curve.png``). Finished seeds are reused, so an interrupted study
resumes. ``eval`` re-evaluates every seed's run with other settings (test-time compute rows);
``compare`` pairs two studies, or two evaluations of one, over their common seeds and tasks.

    python scripts/seeds.py run --config toiny_aa1 --seeds 0,1,2 --minutes 15 --out S/preset
    python scripts/seeds.py run --seeds 0,1 --minutes 60 --snapshots 5,10,15,30 --out S/curve
    python scripts/seeds.py eval S/preset --num-augs 16          # eval/aa1_eval~augs16 per seed
    python scripts/seeds.py compare S/preset S/preset --b-folder aa1_eval~augs16
    python scripts/seeds.py show S/preset
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcdiff.config import load_config  # noqa: E402
from arcdiff.report.stats import mean_sd, paired_bootstrap, task_matrix  # noqa: E402
from arcdiff.runs.evals import eval_dirname  # noqa: E402
from arcdiff.runs.paths import read_metrics, write_json  # noqa: E402
from arcdiff.train.trainer import snapshot_name  # noqa: E402

console = Console()
COLUMNS = (  # (row key, header, format)
    ("pass@2", "pass@2", "pct"),
    ("tasks_solved", "tasks", "int"),
    ("inputs_solved", "test inputs", "int"),
    ("oracle", "oracle", "pct"),
    ("cells", "cells right", "pct"),
    ("repeated", "attempt 2 = 1", "int"),  # test inputs whose second attempt was wasted
)


def seed_row(scores: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's numbers: pass@2, tasks and test inputs solved, oracle, cells right (the
    scorer's mean over test inputs of size-right attempts' cells), step, eval seconds."""
    s, per_task = scores["summary"], scores["per_task"]
    return {
        "pass@2": s["pass@2"],
        "tasks_solved": s["tasks_solved"],
        "inputs_solved": round(sum(t["pass2"] * t["test_inputs"] for t in per_task.values())),
        "oracle": s["oracle"],
        "cells": s["cell_accuracy"],
        "size": s.get("size_accuracy"),
        "repeated": s.get("repeated_attempts"),
        "step": scores["settings"].get("step"),
        "eval_s": scores["settings"].get("wall_s"),
        "per_task": {t: v["pass2"] for t, v in per_task.items()},
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of every column (and of the steps)."""
    keys = [k for k, _, _ in COLUMNS] + ["step", "eval_s"]
    out = {}
    for k in keys:
        values = [r.get(k) for r in rows if r.get(k) is not None]
        if values:
            m = mean_sd(values)
            out[k] = {"mean": m.mean, "sd": m.sd, "n": m.n}
    return out


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return (
        f"{100 * value:.1f}%" if kind == "pct" else f"{value:.0f}" if kind == "int" else str(value)
    )


def table(title: str, rows: dict[str, dict[str, Any]], stats: dict[str, Any]) -> Table:
    t = Table(title=title)
    t.add_column("seed")
    t.add_column("steps", justify="right")
    for _, header, _ in COLUMNS:
        t.add_column(header, justify="right")
    t.add_column("eval s", justify="right")
    for seed, r in rows.items():
        t.add_row(
            seed, _fmt(r.get("step"), "int"), *(_fmt(r[k], f) for k, _, f in COLUMNS),
            _fmt(r.get("eval_s"), "int"),
        )  # fmt: skip

    def ms(k: str, kind: str) -> str:
        if k not in stats:
            return "-"
        m, sd = stats[k]["mean"], stats[k]["sd"]
        return f"{100 * m:.1f}% +- {100 * sd:.1f}" if kind == "pct" else f"{m:.1f} +- {sd:.1f}"

    t.add_row(
        "mean +- sd", ms("step", "int"), *(ms(k, f) for k, _, f in COLUMNS), ms("eval_s", "int"),
        style="bold",
    )  # fmt: skip
    return t


def machine() -> dict[str, str]:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                      if ln.startswith("Model name")), "")  # fmt: skip
    except OSError:
        pass
    return {"cpu": model, "cores": str(os.cpu_count()), "host": platform.node()}


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        ).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "arcdiff").strip())
    return head + ("+dirty" if dirty else "")


def _arcdiff(args: list[str], log: Path) -> None:
    """One arcdiff command on one thread, its output appended to ``log``; a failure stops."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        out.write(f"$ arcdiff {' '.join(args)}\n".encode())
        out.flush()
        done = subprocess.run([sys.executable, "-m", "arcdiff", *args], stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"arcdiff {args[0]} failed ({done.returncode}): see {log}")


def _chains(jobs: int, chains: dict[str, list[list[str]]], out: Path) -> list[str]:
    """Each seed's commands in order, ``jobs`` seeds at a time; a seed that fails stops its
    own chain only. Returns what failed, a line each."""
    from concurrent.futures import ThreadPoolExecutor

    def run(seed: str) -> None:
        tic = time.monotonic()
        for args in chains[seed]:
            _arcdiff(args, out / f"{seed}.log")
        console.print(f"{seed}: done in {(time.monotonic() - tic) / 60:.1f} min", markup=False)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, seed) for seed in chains]
    failed = [str(f.exception()) for f in futures if f.exception() is not None]
    for line in failed:
        console.print(line, markup=False, style="red")
    return failed


def run_folders(split: str, snaps: list[float]) -> list[str]:
    """A seed's evaluation folders under eval/: its final checkpoint's, then each snapshot's."""
    return [eval_dirname(split, name) for name in ["final", *map(snapshot_name, snaps)]]


def run_study(args: argparse.Namespace) -> None:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    budget = ["--set", f"train.max_minutes={args.minutes}"] if args.minutes else [
        "--set", "train.max_minutes=null", "--set", f"train.max_steps={args.steps}"]  # fmt: skip
    snaps = [float(m) for m in args.snapshots.split(",")] if args.snapshots else []
    extra = [a for s in args.set for a in ("--set", s)]
    if snaps:
        extra += ["--set", f"train.snapshot_minutes={orjson.dumps(snaps).decode()}"]
    cfg = load_config(args.config, args.set)  # a typo ends here, before any training
    chains, folders = {}, run_folders(cfg.eval.split, snaps)
    for seed in args.seeds:
        run = out / f"seed{seed}"
        if all((run / "eval" / f / "scores.json").is_file() for f in folders):
            continue  # finished: reused
        chain = [["pipeline", "--config", args.config, "--out", str(run), "--no-progress",
                  "--set", f"train.seed={seed}", "--set", f"data.seed={seed}",
                  "--set", "train.threads=1", *budget, *extra]]  # fmt: skip
        chain += [["evaluate", "--run", str(run), "--checkpoint", snapshot_name(m), "--no-progress"]
                  for m in snaps]  # fmt: skip
        chains[f"seed{seed}"] = chain
    manifest = {
        "config": args.config, "set": args.set, "seeds": args.seeds, "minutes": args.minutes,
        "steps": args.steps, "snapshots": snaps, "commit": commit(), "machine": machine(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "split": cfg.eval.split,
    }  # fmt: skip
    if not (out / "study.json").is_file():
        write_json(out / "study.json", manifest)
    console.print(
        f"{len(chains)} seed(s) to run, {args.jobs} at a time, commit {manifest['commit']}"
    )
    failed = _chains(args.jobs, chains, out)
    show(out, snapshots=snaps)
    if failed:
        raise SystemExit(f"{len(failed)} seed(s) failed")


def seed_dirs(study: Path) -> list[Path]:
    """The study's run folders, seed0, seed1, ... in the order of their seeds (not its logs)."""
    runs = [p for p in study.glob("seed*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(runs, key=lambda p: int(p.name[4:]))


def folder_rows(study: Path, folder: str) -> dict[str, dict[str, Any]]:
    """seedN -> its row, for every seed whose eval/<folder>/scores.json exists."""
    rows = {}
    for run in seed_dirs(study):
        path = run / "eval" / folder / "scores.json"
        if path.is_file():
            rows[run.name] = seed_row(orjson.loads(path.read_bytes()))
            metrics = read_metrics(run) if folder.count("@") == 0 else []
            steps = [m["step"] for m in metrics if "step" in m]
            rows[run.name]["train_steps"] = max(steps) if steps else None
    return rows


def show(study: Path, snapshots: list[float] | None = None, folder: str | None = None) -> dict:
    """Print the study's table (one per evaluation folder) and write seeds.json."""
    manifest = orjson.loads((study / "study.json").read_bytes())
    split = manifest["split"]
    snaps = snapshots if snapshots is not None else manifest.get("snapshots", [])
    if folder:
        folders = [folder]
    else:  # the run's own evaluation, its snapshots by minute, then other settings by name
        found = {p.parent.name for p in study.glob("seed*/eval/*/scores.json")}
        first = run_folders(split, sorted(snaps))
        folders = [f for f in first if f in found] + sorted(found - set(first))
    report: dict[str, Any] = {"study": manifest, "evaluations": {}}
    for name in folders:
        rows = folder_rows(study, name)
        if not rows:
            continue
        stats = summary(list(rows.values()))
        report["evaluations"][name] = {"rows": rows, "summary": stats}
        console.print(table(f"{study.name}: eval/{name} ({len(rows)} seeds)", rows, stats))
    if snaps:
        curve(study, report, split, snaps, manifest)
    write_json(study / "seeds.json", report)
    (study / "seeds.md").write_text(markdown(report))
    console.print(f"wrote {study / 'seeds.json'} and seeds.md")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The tables as markdown (one per evaluation folder), for NOTES.md; the curve, if any, as
    an image above them (seeds.md is the study's report)."""
    keys = [("step", "steps", "int"), *COLUMNS, ("eval_s", "eval s", "int")]
    out = ["![pass@2 and oracle against training minutes](curve.png)", ""] * ("curve" in report)
    for name, ev in report["evaluations"].items():
        out += [f"eval/{name}", "", "| seed | " + " | ".join(h for _, h, _ in keys) + " |"]
        out.append("|---" * (len(keys) + 1) + "|")
        for seed, row in ev["rows"].items():
            out.append(f"| {seed} | " + " | ".join(_fmt(row.get(k), f) for k, _, f in keys) + " |")
        stats = ev["summary"]
        cells = []
        for k, _, f in keys:
            m = stats.get(k)
            if m is None:
                cells.append("-")
            elif f == "pct":
                cells.append(f"**{100 * m['mean']:.1f}% +- {100 * m['sd']:.1f}**")
            else:
                cells.append(f"{m['mean']:.1f} +- {m['sd']:.1f}")
        out += ["| mean +- sd | " + " | ".join(cells) + " |", ""]
    return "\n".join(out)


def curve(study: Path, report: dict, split: str, snaps: list[float], manifest: dict) -> None:
    """curve.png: pass@2 and oracle against training minutes, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = report["evaluations"]
    points = [(m, eval_dirname(split, snapshot_name(m))) for m in snaps]
    points.append((manifest["minutes"], eval_dirname(split)))
    seeds = sorted({s for _, f in points for s in evals.get(f, {}).get("rows", {})})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("pass@2", "oracle"), strict=True):
        for seed in seeds:
            xs = [m for m, f in points if seed in evals.get(f, {}).get("rows", {})]
            ys = [100 * evals[f]["rows"][seed][key] for m, f in points
                  if seed in evals.get(f, {}).get("rows", {})]  # fmt: skip
            ax.plot(xs, ys, marker="o", label=seed)
        ax.set_xlabel("training minutes (1 thread)")
        ax.set_title(f"{key} on {split}")
        ax.set_xscale("log")
        ax.minorticks_off()  # the budgets are the ticks
        ax.set_xticks([m for m, _ in points], [f"{m:g}" for m, _ in points])
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)  # shared: after both are drawn
    axes[0].set_ylabel("% of tasks")
    axes[0].legend()
    fig.suptitle(f"{manifest['config']}: score against training time ({manifest['commit']})")
    fig.tight_layout()
    fig.savefig(study / "curve.png", dpi=120)
    plt.close(fig)
    report["curve"] = {"png": str(study / "curve.png"), "minutes": [m for m, _ in points]}
    console.print(f"wrote {study / 'curve.png'}")


def eval_study(args: argparse.Namespace) -> None:
    """Evaluate every seed's run with other settings (``arcdiff evaluate`` options)."""
    study = args.study.resolve()
    chains = {run.name: [["evaluate", "--run", str(run), "--no-progress", *args.options]]
              for run in seed_dirs(study)}  # fmt: skip
    failed = _chains(args.jobs, chains, study)
    show(study)
    if failed:  # e.g. another evaluation of the same run held its lock
        raise SystemExit(f"{len(failed)} seed(s) failed")


def compare(args: argparse.Namespace) -> None:
    """B - A over the seeds both have, paired task by task."""
    a_study, b_study = args.a.resolve(), args.b.resolve()
    split = orjson.loads((a_study / "study.json").read_bytes())["split"]
    a_rows = folder_rows(a_study, args.a_folder or eval_dirname(split))
    b_rows = folder_rows(b_study, args.b_folder or eval_dirname(split))
    seeds = sorted(set(a_rows) & set(b_rows))
    if not seeds:
        raise SystemExit("no seed is in both")
    tasks = sorted(set().union(*(a_rows[s]["per_task"] for s in seeds)))
    a = task_matrix([a_rows[s]["per_task"] for s in seeds], tasks)
    b = task_matrix([b_rows[s]["per_task"] for s in seeds], tasks)
    result = paired_bootstrap(a, b, draws=args.draws)
    line = (
        f"B - A pass@2 over {len(seeds)} paired seed(s) x {len(tasks)} tasks: "
        f"{100 * result.diff:+.2f} points, {100 * result.level:.0f}% interval "
        f"[{100 * result.low:+.2f}, {100 * result.high:+.2f}], p = {result.p:.3f} "
        f"({'significant' if result.significant else 'not significant'})"
    )
    console.print(line, markup=False)
    if args.json:
        result_json = vars(result) | {"significant": result.significant}
        write_json(
            args.json, {"a": str(a_study), "b": str(b_study), **result_json, "paired": seeds}
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate a recipe for several seeds")
    r.add_argument("--config", default="toiny_aa1")
    r.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    r.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    budget = r.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--steps", type=int)
    r.add_argument("--snapshots", help="minutes whose checkpoints are also evaluated: 5,10,15")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--out", type=Path, required=True)
    e = sub.add_parser(
        "eval",
        help="evaluate every seed with other settings",
        epilog="Any other option goes to `arcdiff evaluate`, e.g. `seeds.py eval S/preset15 "
        "--num-augs 64` (folder aa1_eval~augs64) or `--set eval.distinct_attempts=false`.",
    )
    e.add_argument("study", type=Path)
    e.add_argument("--jobs", type=int, default=2)
    c = sub.add_parser("compare", help="paired bootstrap over tasks: B - A")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--a-folder", help="eval folder of A (default: its split's)")
    c.add_argument("--b-folder", help="eval folder of B (default: its split's)")
    c.add_argument("--draws", type=int, default=10_000)
    c.add_argument("--json", type=Path)
    s = sub.add_parser("show", help="print a study's tables and write seeds.json")
    s.add_argument("study", type=Path)
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        args.options = rest  # arcdiff evaluate's own options, e.g. --num-augs 16
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    {"run": run_study, "eval": eval_study, "compare": compare, "show": lambda a: show(a.study)}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
