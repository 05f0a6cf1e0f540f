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
import sys
import time
from collections.abc import Sequence
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
from peer_setup import git_commit, run_script  # noqa: E402

from arcdiff.config import load_config  # noqa: E402
from arcdiff.console import console  # noqa: E402
from arcdiff.data.dataset import hold_out_demos  # noqa: E402
from arcdiff.data.tasks import TaskSet, load_tasks  # noqa: E402
from arcdiff.errors import DataError  # noqa: E402

BATCH = LOW_RECIPE["batch_size"]


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


class Bench:
    """One benchmark folder: mdlARC's patched copy, its state file and its logs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out.resolve()
        self.root = self.out / "mdlarc"
        self.state_path = self.out / "bench_state.json"
        settings = {
            "config": args.config,
            "minutes": args.minutes,
            "seed": args.seed,
            "mdlarc_steps": args.mdlarc_steps,
        }
        self.state = load_state(self.state_path, settings)

    def save(self) -> None:
        self.state_path.write_bytes(orjson.dumps(self.state))

    def run(self, name: str, phase: str, args_file: Path, task_ids: Sequence[str] = ()) -> float:
        """One phase of the driver on one thread; its wall seconds (a failure: one DataError)."""
        cmd = [self.python, "bench_run.py", phase, args_file.name, *task_ids]
        return run_logged({name: (cmd, self.root, self.out / "logs" / f"{name}.txt")})[name]

    def set_up(self, train: TaskSet, evals: TaskSet, max_size: int) -> dict[str, int]:
        """Copy and patch mdlARC, write its data and driver, find its interpreter."""
        diff = copy_mdlarc(self.args.mdlarc_dir, self.root)
        (self.out / "mdlarc.patch").write_text(diff)
        console.print(
            f"patch applied to the copy in {self.root} (not to {self.args.mdlarc_dir}):",
            markup=False,
        )
        console.print(diff, markup=False, highlight=False, soft_wrap=True)
        write_driver(self.root)
        counts = write_mdlarc_data(self.root, train, evals.tasks, max_size)
        console.print(f"mdlARC data: {counts}", markup=False)
        self.python, self.numba = mdlarc_python(self.out)
        return counts

    def calibrate(self) -> float:
        """mdlARC's optimizer steps per second (its first 5 s, the warm-up, left out)."""
        seconds = self.args.calibrate_seconds
        args = mdlarc_args(
            self.root, "calibrate", epochs=CALIBRATION_EPOCHS, seconds=seconds, seed=self.args.seed
        )
        self.run("calibrate_mdlarc", "train", args)
        log = self.root / "runs" / "calibrate_loss.jsonl"
        rows = [r for r in read_loss_log(log) if r["s"] > 5]
        if len(rows) < 2:
            raise DataError(f"mdlARC calibration took fewer than 2 steps in {seconds} s; see {log}")
        return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["s"] - rows[0]["s"])

    def schedule(self, train_sequences: int) -> Path:
        """The training's arguments: its epochs are the steps it takes in the budget."""
        if self.args.mdlarc_steps:
            self.state["steps"] = self.args.mdlarc_steps
        if "steps" not in self.state:
            rate = self.calibrate()
            steps = max(10, int(rate * 60 * self.args.minutes))
            self.state |= {"steps_per_s": rate, "steps": steps}
            console.print(f"calibration: {rate:.2f} steps/s -> {steps} steps", markup=False)
        steps_per_epoch = max(1, train_sequences // BATCH)  # train_model drops the last batch
        self.state["steps_per_epoch"] = steps_per_epoch
        self.state["epochs"] = max(1, round(self.state["steps"] / steps_per_epoch))
        self.save()
        return mdlarc_args(
            self.root,
            "bench",
            epochs=self.state["epochs"],
            seconds=60 * self.args.minutes,
            seed=self.args.seed,
            eval_augments=self.args.augments,
        )

    def train(self, bench_args: Path) -> None:
        if "train_wall" in self.state:
            return
        (self.root / "runs" / "bench_loss.jsonl").unlink(missing_ok=True)
        console.print(
            f"training mdlARC for {self.args.minutes:g} minutes ({self.state['epochs']} epochs "
            f"of {self.state['steps_per_epoch']} steps), one thread ...",
            markup=False,
        )
        self.state["train_wall"] = self.run("train_mdlarc", "train", bench_args)
        self.save()

    def evaluate(self, bench_args: Path, tasks: TaskSet) -> Path:
        """mdlARC's inference on ``tasks`` (all of them without --limit); its submission.json."""
        submission = self.root / "runs" / EVAL_RUN / "submission.json"
        key = {"limit": self.args.limit, "augments": self.args.augments}
        if self.state.get("eval_key") == key:
            return submission
        submission.unlink(missing_ok=True)
        console.print(
            f"mdlARC inference on {len(tasks)} tasks, {self.args.augments} augmentations, "
            "one thread ...",
            markup=False,
        )
        task_ids = tasks.ids if self.args.limit else ()
        self.state["eval_wall"] = self.run("eval_mdlarc", "eval", bench_args, task_ids)
        self.state["eval_key"] = key
        self.save()
        return submission


def mdlarc_row(bench: Bench, submission: Path, tasks: TaskSet) -> dict[str, Any]:
    """mdlARC's row of the benchmark table (scripts/peer_report.py's keys), scored by arcdiff."""
    converted = mdlarc_submission(orjson.loads(submission.read_bytes()), tasks)
    (bench.out / "mdlarc_submission.json").write_bytes(orjson.dumps(converted))
    result = score_submission(converted, tasks.tasks, tasks.solutions)
    info = orjson.loads((bench.root / "runs" / "bench_info.json").read_bytes())
    log = bench.root / "runs" / "bench_loss.jsonl"
    row = loss_log_row(log, bench.state["eval_wall"], BATCH)
    row |= {"parameters": info["parameters"], "batch": BATCH, "lr": LOW_RECIPE["normuon_lr"]}
    row |= {"seed": bench.args.seed, "per_task": result["per_task"]}  # for peer_table.py
    return row | scored(result["summary"], result["per_task"]) | {"oracle": None}  # top two


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    cfg = load_config(args.config)
    split, max_size = cfg.eval.split, cfg.data.max_size
    if list(cfg.data.eval_sources) != [split]:
        raise DataError(f"{args.config}: the benchmark needs data.eval_sources == [eval.split]")
    train = load_tasks(cfg.data.train_sources, max_size=max_size)
    train, _ = hold_out_demos(train, cfg.data.val_pairs, cfg.data.seed)  # as arcdiff's stream
    evals = load_tasks(split, max_size=max_size)
    scored_tasks = load_tasks(split, max_size=max_size, limit=args.limit)

    bench = Bench(args)
    counts = bench.set_up(train, evals, max_size)
    bench_args = bench.schedule(counts["train_sequences"])
    bench.train(bench_args)
    row = mdlarc_row(bench, bench.evaluate(bench_args, scored_tasks), scored_tasks)

    title = (
        f"mdlARC on {len(scored_tasks)} tasks of {split} (grids <= {max_size}), "
        f"{args.minutes:g} minutes, one thread, {args.augments} augmentations"
    )
    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "arcdiff_commit": git_commit(Path(__file__).resolve().parent.parent),
        "mdlarc_commit": git_commit(args.mdlarc_dir),
        "config": args.config,
        "numba": bench.numba,
        "mdlarc_args": orjson.loads(bench_args.read_bytes()),
        "data": counts,
        "state": bench.state,
        "systems": {"mdlarc": {k: v for k, v in row.items() if k != "curve"}},
    }
    (bench.out / "bench.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    (bench.out / "bench.md").write_text(markdown(row, title))
    console.print(markdown(row, title), markup=False)
    console.print(f"wrote {bench.out / 'bench.json'} and {bench.out / 'bench.md'}", markup=False)
    return record


if __name__ == "__main__":
    run_script(main)
