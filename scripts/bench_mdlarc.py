"""mdlARC on arcdiff's benchmark: arcdiff's tasks, one CPU thread, a wall-clock budget and
arcdiff's scorer.

mdlARC (github.com/mvakde/mdlARC) is an autoregressive small-transformer ARC solver: one task
embedding per task, NorMuon, dihedral and colour augmentations, and test-time voting over its
augmentations (AAIVR). ``--mdlarc-dir`` is a checkout of it, which this script never changes:
its code is copied into ``<out>/mdlarc/`` and the copy patched to run on one CPU thread with a
budget and a loss log (scripts/mdlarc_patch.py; the diff is printed and saved as
``<out>/mdlarc.patch``).

1. Data: arcdiff's preset (``--config``, default toiny_aa1) decides the tasks, as in
   scripts/bench_peer.py: its training tasks (held-out validation demonstrations removed) and
   the demonstrations and test inputs of its evaluation tasks, in mdlARC's challenges.json.
   No evaluation test output is ever written for mdlARC.
2. Model: mdlARC's "low" recipe (batch 32, NorMuon 1.66e-3 with AdamW 3e-4, 2% warmup, WSD
   decay from 80%, 80 augmentations) at its smallest shape (d_model 128, 4 layers, 4 heads,
   d_ff 512). Its schedule is counted in epochs; the epochs are those its optimizer steps in
   the budget fill, measured by a short calibration run (``--mdlarc-steps`` skips it).
3. Training for ``--minutes`` on one thread; then its own inference (80 augmentations, AAIVR
   voting) writes submission.json, which arcdiff's scorer scores.
4. ``<out>/bench.json`` and ``<out>/bench.md``.

    python scripts/bench_mdlarc.py --mdlarc-dir ../mdlARC --minutes 15 --out outputs/bench_mdlarc

Re-running with the same ``--out`` reuses a finished training and evaluation.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peer import run_logged  # noqa: E402
from mdlarc_format import mdlarc_submission, write_mdlarc_data  # noqa: E402
from mdlarc_patch import copy_mdlarc  # noqa: E402
from mdlarc_setup import (  # noqa: E402
    CALIBRATION_EPOCHS,
    EVAL_RUN,
    LOW_RECIPE,
    mdlarc_args,
    mdlarc_python,
    write_driver,
)
from peer_format import score_submission  # noqa: E402
from peer_report import COLUMNS, fmt, loss_log_row, read_loss_log, scored  # noqa: E402
from peer_setup import git_commit  # noqa: E402

from arcdiff.config import load_config  # noqa: E402
from arcdiff.console import console, err_console  # noqa: E402
from arcdiff.data.dataset import hold_out_demos  # noqa: E402
from arcdiff.data.tasks import load_tasks  # noqa: E402
from arcdiff.errors import ArcdiffError, DataError  # noqa: E402

BATCH = LOW_RECIPE["batch_size"]


def driver_cmd(python: str, phase: str, args_file: Path, task_ids: list[str] = ()) -> list[str]:
    return [python, "bench_run.py", phase, args_file.name, *task_ids]


def run_one(name: str, cmd: list[str], root: Path, log: Path) -> float:
    """Run one mdlARC phase on one thread; its wall seconds (a failure is one DataError)."""
    return run_logged({name: (cmd, root, log)})[name]


def calibrate(python: str, root: Path, out: Path, seconds: int, seed: int) -> float:
    """mdlARC's optimizer steps per second in this budget's setting (its first 5 s, the
    warm-up, left out)."""
    args = mdlarc_args(root, "calibrate", epochs=CALIBRATION_EPOCHS, seconds=seconds, seed=seed)
    log = out / "logs" / "calibrate_mdlarc.txt"
    run_one("mdlARC calibration", driver_cmd(python, "train", args), root, log)
    rows = [r for r in read_loss_log(root / "runs" / "calibrate_loss.jsonl") if r["s"] > 5]
    if len(rows) < 2:
        raise DataError(f"mdlARC calibration took fewer than 2 steps in {seconds} s; see {log}")
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["s"] - rows[0]["s"])


def load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The finished phases of an earlier run into the same folder, if it had these settings."""
    state = orjson.loads(path.read_bytes()) if path.exists() else {"settings": settings}
    if state["settings"] != settings:
        raise DataError(f"{path}: made with {state['settings']}, not {settings}; use another --out")
    return state


def markdown(row: dict[str, Any], title: str) -> str:
    lines = [title, "", "| | mdlARC |", "|---|---|"]
    lines += [f"| {label} | {fmt(row.get(key), pattern)} |" for label, key, pattern in COLUMNS]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mdlarc-dir", type=Path, required=True, help="a checkout of mvakde/mdlARC"
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="the training budget")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_mdlarc"))
    parser.add_argument(
        "--config", default="toiny_aa1", help="arcdiff's preset (decides the tasks)"
    )
    parser.add_argument("--seed", type=int, default=0, help="mdlARC's seed")
    parser.add_argument(
        "--mdlarc-steps", type=int, help="mdlARC's schedule length in steps (default: calibrate)"
    )
    parser.add_argument("--calibrate-seconds", type=int, default=60)
    parser.add_argument(
        "--augments",
        type=int,
        default=LOW_RECIPE["max_augments"],
        help="mdlARC's test-time augmentations per test input (its low preset: 80)",
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N tasks only (a smoke run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    out, seconds = args.out.resolve(), 60 * args.minutes
    root = out / "mdlarc"
    cfg = load_config(args.config)
    split = cfg.eval.split
    if list(cfg.data.eval_sources) != [split]:
        raise DataError(f"{args.config}: the benchmark needs data.eval_sources == [eval.split]")

    train = load_tasks(cfg.data.train_sources, max_size=cfg.data.max_size)
    train, _ = hold_out_demos(train, cfg.data.val_pairs, cfg.data.seed)  # as arcdiff's stream
    evals = load_tasks(split, max_size=cfg.data.max_size)
    scored_tasks = load_tasks(split, max_size=cfg.data.max_size, limit=args.limit)

    diff = copy_mdlarc(args.mdlarc_dir, root)
    (out / "mdlarc.patch").write_text(diff)
    console.print(f"patch applied to the copy in {root} (not to {args.mdlarc_dir}):", markup=False)
    console.print(diff, markup=False, highlight=False, soft_wrap=True)
    write_driver(root)
    counts = write_mdlarc_data(root, train, evals.tasks, cfg.data.max_size)
    console.print(f"mdlARC data: {counts}", markup=False)
    python, numba = mdlarc_python(out)

    settings = {
        "config": args.config,
        "minutes": args.minutes,
        "seed": args.seed,
        "mdlarc_steps": args.mdlarc_steps,
    }
    state_path = out / "bench_state.json"
    state = load_state(state_path, settings)
    if args.mdlarc_steps:
        state["steps"] = args.mdlarc_steps
    if "steps" not in state:
        rate = calibrate(python, root, out, args.calibrate_seconds, args.seed)
        state |= {"steps_per_s": rate, "steps": max(10, int(rate * seconds))}
        console.print(f"calibration: {rate:.2f} steps/s -> {state['steps']} steps", markup=False)
    steps_per_epoch = max(1, counts["train_sequences"] // BATCH)  # train_model drops the last
    state["epochs"] = max(1, round(state["steps"] / steps_per_epoch))
    state_path.write_bytes(orjson.dumps(state))
    bench_args = mdlarc_args(
        root,
        "bench",
        epochs=state["epochs"],
        seconds=seconds,
        seed=args.seed,
        eval_augments=args.augments,
    )

    if "train_wall" not in state:
        (root / "runs" / "bench_loss.jsonl").unlink(missing_ok=True)
        console.print(
            f"training mdlARC for {args.minutes:g} minutes ({state['epochs']} epochs of "
            f"{steps_per_epoch} steps), one thread ...",
            markup=False,
        )
        state["train_wall"] = run_one(
            "mdlARC training",
            driver_cmd(python, "train", bench_args),
            root,
            out / "logs" / "train_mdlarc.txt",
        )
        state_path.write_bytes(orjson.dumps(state))

    submission_path = root / "runs" / EVAL_RUN / "submission.json"
    eval_key = {"limit": args.limit, "augments": args.augments}
    if "eval_wall" in state and state["eval_key"] != eval_key:  # another evaluation
        del state["eval_wall"]
    if "eval_wall" not in state:
        submission_path.unlink(missing_ok=True)
        console.print(
            f"mdlARC inference on {len(scored_tasks)} tasks, {args.augments} augmentations, "
            "one thread ...",
            markup=False,
        )
        task_ids = list(scored_tasks.ids) if args.limit else []
        state["eval_wall"] = run_one(
            "mdlARC evaluation",
            driver_cmd(python, "eval", bench_args, task_ids),
            root,
            out / "logs" / "eval_mdlarc.txt",
        )
        state["eval_key"] = eval_key
        state_path.write_bytes(orjson.dumps(state))

    submission = mdlarc_submission(orjson.loads(submission_path.read_bytes()), scored_tasks)
    (out / "mdlarc_submission.json").write_bytes(orjson.dumps(submission))
    result = score_submission(submission, scored_tasks.tasks, scored_tasks.solutions)
    info = orjson.loads((root / "runs" / "bench_info.json").read_bytes())
    row = loss_log_row(root / "runs" / "bench_loss.jsonl", state["eval_wall"], BATCH)
    row |= {"parameters": info["parameters"], "batch": BATCH, "lr": LOW_RECIPE["normuon_lr"]}
    row |= scored(result["summary"], result["per_task"]) | {"oracle": None}  # top two only
    title = (
        f"mdlARC on {len(scored_tasks)} tasks of {split} (grids <= {cfg.data.max_size}), "
        f"{args.minutes:g} minutes, one thread, {args.augments} augmentations"
    )
    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "arcdiff_commit": git_commit(Path(__file__).resolve().parent.parent),
        "mdlarc_commit": git_commit(args.mdlarc_dir),
        "config": args.config,
        "numba": numba,
        "mdlarc_args": orjson.loads(bench_args.read_bytes()),
        "data": counts,
        "state": state,
        "systems": {"mdlarc": {k: v for k, v in row.items() if k != "curve"}},
    }
    (out / "bench.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    (out / "bench.md").write_text(markdown(row, title))
    console.print(markdown(row, title), markup=False)
    console.print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}", markup=False)
    return record


if __name__ == "__main__":
    try:
        main()
    except (ArcdiffError, subprocess.CalledProcessError) as e:
        err_console.print(f"error: {e}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
