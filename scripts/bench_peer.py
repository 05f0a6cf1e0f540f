"""arcdiff beside the peer it descends from: same machine, tasks, budget and scorer.

The peer is the discrete-diffusion solver in TrelisResearch/arc-agi-2025 (folder
experimental/diffusion); ``--peer-dir`` is a checkout of that repository, which this script
never changes: it copies experimental/diffusion into ``<out>/peer/``, patches the copy's
training loop for a wall-clock budget and a loss log (the diff is printed and saved as
``<out>/peer.patch``) and writes the peer's data and config there.

1. Data: arcdiff's preset (``--config``, default toiny_aa1) decides the tasks: its training
   tasks (aa1 train, grids <= max_size, the same held-out validation demonstrations removed)
   and the demonstrations of its evaluation tasks, written in the peer's format. The
   evaluation test outputs are written for the peer only after its training.
2. Model: the peer's toiny recipe (3 layers, 4 heads, batch 128, lr 5e-4, EMA) at the width
   whose parameter count is nearest arcdiff's, on a max_size canvas, no wandb. Its schedule
   lengths (optimizer steps, warmup, EMA horizon) are scaled to the steps it can take in the
   budget, measured by a short calibration run (``--peer-steps`` skips it).
3. Training: both at once, one thread each (``OMP_NUM_THREADS=1``), for ``--minutes``.
4. Evaluation: both at once, each its own best mode (arcdiff: the preset's evaluation; the
   peer: ``evaluate.py --maj``, confidence-split voting over 72 augmentations); the peer's
   results become submission.json; arcdiff's scorer scores both submissions.
5. ``<out>/bench.json``, ``<out>/bench.md`` (the table) and ``<out>/loss.png``.

    python scripts/bench_peer.py --peer-dir ../arc-agi-2025 --minutes 15 --out outputs/bench_peer

Re-running with the same ``--out`` reuses finished trainings and evaluations.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_format import (  # noqa: E402
    peer_submission,
    score_submission,
    write_eval_solutions,
    write_peer_data,
)
from peer_report import (  # noqa: E402
    PEER_BATCH,
    arcdiff_row,
    peer_row,
    plot_losses,
    read_loss_log,
    scored,
    table,
)
from peer_setup import (  # noqa: E402
    PEER_LR,
    copy_peer,
    git_commit,
    one_thread_env,
    peer_config,
    peer_python,
    peer_width,
    run_script,
)

from arcdiff.config import load_config  # noqa: E402
from arcdiff.console import console  # noqa: E402
from arcdiff.data.dataset import hold_out_demos  # noqa: E402
from arcdiff.data.tasks import load_tasks  # noqa: E402
from arcdiff.errors import DataError  # noqa: E402
from arcdiff.runs.checkpoint import build_model  # noqa: E402


def peer_train_cmd(python: str, config: Path) -> list[str]:
    return [
        python,
        "experimental/diffusion/train_diffusion_backbone.py",
        "--config",
        str(config),
        "--no-wandb",
    ]


def run_logged(cmds: dict[str, tuple[list[str], Path, Path]]) -> dict[str, float]:
    """Run commands at the same time, one thread each, each logging to its own file; returns
    each one's wall seconds. A failure is one line naming the command and its log."""
    procs, start, walls = {}, time.monotonic(), {}
    for name, (cmd, cwd, log) in cmds.items():
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as f:
            procs[name] = subprocess.Popen(
                cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=one_thread_env()
            )
    while procs:
        for name, proc in list(procs.items()):
            if proc.poll() is not None:
                walls[name] = time.monotonic() - start
                del procs[name]
                if proc.returncode != 0:
                    for other in procs.values():
                        other.terminate()
                    raise DataError(f"{name} failed (exit {proc.returncode}); see {cmds[name][2]}")
        time.sleep(1.0)
    return walls


def calibrate(
    python: str, root: Path, out: Path, config_name: str, seconds: int, beside: bool
) -> float:
    """Peer optimizer steps per second, measured while an arcdiff training runs beside it (the
    load of the real benchmark) or, with ``beside`` False, under whatever load runs now."""
    config = orjson.loads((root / "bench_config.json").read_bytes())
    config["training"] |= {"optimizer_steps": 10**6, "max_seconds": seconds}
    config["output"]["output_dir"] = "outputs/calibrate"
    path = root / "calibrate_config.json"
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    cmds = {
        "peer calibration": (
            peer_train_cmd(python, path),
            root,
            out / "logs" / "calibrate_peer.txt",
        )
    }
    if beside:
        scratch = out / "calibrate_arcdiff"
        shutil.rmtree(scratch, ignore_errors=True)
        cmds["arcdiff beside it"] = (
            arcdiff_train_cmd(config_name, scratch, seconds / 60, 0),
            Path.cwd(),
            out / "logs" / "calibrate_arcdiff.txt",
        )
    run_logged(cmds)
    rows = [
        r for r in read_loss_log(root / "outputs" / "calibrate" / "bench_loss.jsonl") if r["s"] > 5
    ]
    if len(rows) < 2:
        raise DataError(
            f"peer calibration took fewer than 2 steps in {seconds} s; see {out / 'logs'}"
        )
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["s"] - rows[0]["s"])


def arcdiff_overrides(minutes: float, seed: int) -> list[str]:
    return [
        f"train.max_minutes={minutes}",
        f"train.seed={seed}",
        f"data.seed={seed}",
        "train.max_steps=1000000",
        "train.threads=1",
        "train.quick_eval_every=0",
    ]


def arcdiff_train_cmd(config_name: str, run: Path, minutes: float, seed: int) -> list[str]:
    sets = [a for o in arcdiff_overrides(minutes, seed) for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "arcdiff",
        "train",
        "--config",
        config_name,
        "--out",
        str(run),
        "--no-progress",
        *sets,
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--peer-dir", type=Path, required=True, help="a checkout of TrelisResearch/arc-agi-2025"
    )
    parser.add_argument(
        "--minutes", type=float, default=15.0, help="training budget of each system"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_peer"))
    parser.add_argument(
        "--config", default="toiny_aa1", help="arcdiff's preset (decides the tasks)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="both systems' seed (arcdiff: train.seed, data.seed)"
    )
    parser.add_argument(
        "--peer-steps", type=int, help="the peer's schedule length (default: calibrate)"
    )
    parser.add_argument("--calibrate-seconds", type=int, default=90)
    parser.add_argument(
        "--peer-batch", type=int, default=PEER_BATCH, help="the peer's batch (its recipe: 128)"
    )
    parser.add_argument(
        "--peer-lr", type=float, default=PEER_LR, help="the peer's learning rate (its: 5e-4)"
    )
    parser.add_argument(
        "--peer-only",
        action="store_true",
        help="train and evaluate the peer alone (arcdiff's rows come from scripts/seeds.py; "
        "run two of these at once for the protocol's load)",
    )
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="stop after training (a rerun without it evaluates the trained models)",
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N tasks only (a smoke run)")
    return parser.parse_args(argv)


def train_both(args: argparse.Namespace, out: Path, python: str, config: Path) -> dict:
    """Train the peer (and arcdiff beside it, unless --peer-only); each one's wall seconds."""
    root = out / "peer"
    shutil.rmtree(out / "arcdiff", ignore_errors=True)
    (root / "outputs" / "toiny" / "final_model.pt").unlink(missing_ok=True)
    who = "the peer" if args.peer_only else "both"
    console.print(f"training {who} for {args.minutes:g} minutes, one thread each ...")
    cmds = {
        "peer training": (peer_train_cmd(python, config), root, out / "logs" / "train_peer.txt")
    }
    if not args.peer_only:
        cmds["arcdiff training"] = (
            arcdiff_train_cmd(args.config, out / "arcdiff", args.minutes, args.seed),
            Path.cwd(),
            out / "logs" / "train_arcdiff.txt",
        )
    return run_logged(cmds)


def evaluate_both(args: argparse.Namespace, out: Path, python: str, config: Path, evals) -> dict:
    """Evaluate the peer (``evaluate.py --maj``) and arcdiff (its preset's evaluation) at once."""
    root = out / "peer"
    limit = ["--limit", str(args.limit)] if args.limit else []
    write_eval_solutions(root, evals)  # the peer's evaluate.py scores itself; training is over
    console.print("evaluating, one thread each ...", markup=False)
    peer_eval = root / "outputs" / "toiny" / "eval.json"
    peer_cmd = [
        python,
        "experimental/diffusion/evaluate.py",
        "--config",
        str(config),
        "--maj",
        "--device",
        "cpu",
        "--output",
        str(peer_eval),
        *limit,
    ]
    cmds = {"peer evaluation": (peer_cmd, root, out / "logs" / "eval_peer.txt")}
    if not args.peer_only:
        run = out / "arcdiff"
        arcdiff_cmd = [sys.executable, "-m", "arcdiff", "evaluate", "--run", str(run), "--force"]
        cmds["arcdiff evaluation"] = (
            [*arcdiff_cmd, *limit],
            Path.cwd(),
            out / "logs" / "eval_arcdiff.txt",
        )
    return run_logged(cmds)


def score_systems(
    args: argparse.Namespace, out: Path, state: dict, scored_tasks, params: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Each system's row: steps, speed, walls, and arcdiff's scorer on its submission."""
    root = out / "peer"
    peer_eval = orjson.loads((root / "outputs" / "toiny" / "eval.json").read_bytes())
    peer_sub = peer_submission(peer_eval, scored_tasks.tasks)
    (out / "peer_submission.json").write_bytes(orjson.dumps(peer_sub))
    systems, submissions = {}, {"peer": peer_sub}
    if not args.peer_only:
        run = out / "arcdiff"
        newest = max((run / "eval").glob("*/scores.json"), key=lambda p: p.stat().st_mtime)
        arcdiff_eval = newest.parent  # eval/<split>/ (eval/<split>~limitN/ under --limit)
        submissions["arcdiff"] = orjson.loads((arcdiff_eval / "submission.json").read_bytes())
        systems["arcdiff"] = arcdiff_row(run, state["eval_wall"]["arcdiff evaluation"])
        own = orjson.loads((arcdiff_eval / "scores.json").read_bytes())["summary"]
    systems["peer"] = peer_row(root, state["eval_wall"]["peer evaluation"], args.peer_batch) | {
        "batch": args.peer_batch,
        "lr": args.peer_lr,
        "seed": args.seed,
    }
    for name, sub in submissions.items():
        result = score_submission(sub, scored_tasks.tasks, scored_tasks.solutions)
        systems[name] |= scored(result["summary"], result["per_task"])
        systems[name] |= {"parameters": params[name], "per_task": result["per_task"]}
    if "arcdiff" in systems:
        systems["arcdiff"]["oracle"] = own["oracle"]  # arcdiff exposes every candidate
    systems["peer"]["oracle"] = None  # the peer keeps its top two only
    return systems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out, seconds = args.out.resolve(), 60 * args.minutes
    root = out / "peer"
    cfg = load_config(args.config, arcdiff_overrides(args.minutes, args.seed))
    settings = cfg.eval
    if list(cfg.data.eval_sources) != [settings.split]:
        raise DataError(f"{args.config}: the benchmark needs data.eval_sources == [eval.split]")

    train = load_tasks(cfg.data.train_sources, max_size=cfg.data.max_size)
    train, _ = hold_out_demos(train, cfg.data.val_pairs, cfg.data.seed)  # as arcdiff's stream
    evals = load_tasks(settings.split, max_size=cfg.data.max_size)
    num_tasks = len(train) + len(evals)
    scored_tasks = load_tasks(settings.split, max_size=cfg.data.max_size, limit=args.limit)
    arcdiff_params = sum(p.numel() for p in build_model(cfg, num_tasks).parameters())

    diff = copy_peer(args.peer_dir, root)
    (out / "peer.patch").write_text(diff)
    console.print(f"patch applied to the copy in {root} (not to {args.peer_dir}):", markup=False)
    console.print(diff, markup=False, highlight=False, soft_wrap=True)
    counts = write_peer_data(root, train, evals.tasks, cfg.data.max_size)
    console.print(f"peer data: {counts}", markup=False)
    python = peer_python(out)
    d_model, peer_params = peer_width(python, root, num_tasks, cfg.data.max_size, arcdiff_params)
    console.print(
        f"parameters: arcdiff {arcdiff_params:,}, peer {peer_params:,} (d_model {d_model})",
        markup=False,
    )

    recipe = (args.peer_batch, args.peer_lr)  # the schedule is calibrated at this batch
    state_path = out / "bench_state.json"
    state = orjson.loads(state_path.read_bytes()) if state_path.exists() else {}
    if args.peer_steps:
        state["peer_steps"] = args.peer_steps
    if "peer_steps" not in state:
        peer_config(root, d_model, cfg.data.max_size, 10**6, seconds, *recipe, args.seed)
        rate = calibrate(python, root, out, args.config, args.calibrate_seconds, not args.peer_only)
        state |= {"peer_steps_per_s": rate, "peer_steps": max(10, int(rate * seconds))}
        console.print(
            f"peer calibration: {rate:.2f} steps/s -> {state['peer_steps']} steps", markup=False
        )
    config = peer_config(
        root, d_model, cfg.data.max_size, state["peer_steps"], seconds, *recipe, args.seed
    )
    state_path.write_bytes(orjson.dumps(state))
    if "train_wall" not in state:
        state["train_wall"] = train_both(args, out, python, config)
        state_path.write_bytes(orjson.dumps(state))
    if args.train_only:
        console.print(f"trained; {out} is evaluated by the same command without --train-only")
        return state
    if "eval_wall" not in state:
        state["eval_wall"] = evaluate_both(args, out, python, config, evals)
        state_path.write_bytes(orjson.dumps(state))

    params = {"arcdiff": arcdiff_params, "peer": peer_params}
    systems = score_systems(args, out, state, scored_tasks, params)
    title = (
        f"{len(scored_tasks)} tasks of {settings.split} (grids <= {cfg.data.max_size}), "
        f"{args.minutes:g} minutes each, seed {args.seed}"
    )
    rich_table, md = table(systems, title)
    console.print(rich_table)
    plot_losses(systems, out / "loss.png")
    peer_own = orjson.loads((root / "outputs" / "toiny" / "eval.json").read_bytes())["metrics"]
    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "arcdiff_commit": git_commit(Path(__file__).resolve().parent.parent),
        "peer_commit": git_commit(args.peer_dir),
        "peer_d_model": d_model,
        "peer_config": orjson.loads(config.read_bytes()),
        "peer_own_metrics": {
            k: peer_own.get(k) for k in ("test_pass_at_2_rate", "avg_task_score", "total_tasks")
        },
        "data": counts,
        "state": state,
        "systems": {
            k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in systems.items()
        },
    }
    (out / "bench.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    (out / "bench.md").write_text(f"{title}\n\n{md}\n")
    console.print(
        f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'loss.png'}", markup=False
    )
    return record


if __name__ == "__main__":
    run_script(main)
