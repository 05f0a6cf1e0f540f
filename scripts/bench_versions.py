"""One training step of two versions of arcdiff, alternated in one run.

    python scripts/bench_versions.py --old /work/base28 --new . --threads 1 2 --rounds 3

Each round runs ``scripts/bench_train.py`` of the old tree, then of the new one (each in its own
process, importing its own ``arcdiff``, with ``--threads T --steps N``), for every thread count;
the seconds per step are the mean over each run's timed steps (no self-conditioning, as the CPU
preset trains). Prints a row per round and thread count and the median ratio old / new: how many
times more steps the new version takes in the same minutes. Alternation puts both versions under
the same machine load; the load average is printed with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def step_seconds(tree: Path, config: str, threads: int, steps: int, sets: list[str]) -> float:
    """Mean seconds per timed step of ``tree``'s bench_train in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = [sys.executable, str(tree / "scripts" / "bench_train.py"), "--config", config]
        args += ["--threads", str(threads), "--steps", str(steps), "--json", str(out)]
        args += [a for s in sets for a in ("--set", s)]
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        env.pop("OMP_NUM_THREADS", None)  # --threads decides
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tree)
        if done.returncode != 0:
            raise SystemExit(f"{tree}: bench_train failed:\n{done.stderr[-2000:]}")
        return json.loads(out.read_text())["kinds"]["no_sc"]["mean_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout of the old version")
    parser.add_argument("--new", type=Path, default=Path("."), help="the new version's tree")
    parser.add_argument("--config", default="toiny_aa1")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    versions = {"old": args.old, "new": args.new}
    for name, tree in versions.items():
        if not (tree / "scripts" / "bench_train.py").is_file():
            parser.error(f"--{name} {tree}: no scripts/bench_train.py there")
    rows = []
    for r in range(args.rounds):
        for threads in args.threads:
            row = {"round": r + 1, "threads": threads}
            for name, tree in versions.items():
                row[name] = step_seconds(tree, args.config, threads, args.steps, args.sets)
            row["ratio"] = row["old"] / row["new"]
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    console = Console()
    table = Table(title=f"{args.config}: seconds per step, old {args.old} / new {args.new}")
    for column in ("threads", "old s/step", "new s/step", "old / new", "rounds"):
        table.add_column(column, justify="right")
    for threads in args.threads:
        mine = [row for row in rows if row["threads"] == threads]
        table.add_row(
            str(threads),
            f"{statistics.median(r['old'] for r in mine):.3f}",
            f"{statistics.median(r['new'] for r in mine):.3f}",
            f"{statistics.median(r['ratio'] for r in mine):.2f}x",
            str(len(mine)),
        )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
