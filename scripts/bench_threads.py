"""Which thread setting trains fastest when another process holds a core, and what it costs on a
quiet machine. Alternated in one run:

    python scripts/bench_threads.py --rounds 2 --steps 8

Each round times ``scripts/bench_train.py`` (the library's own step, with the CPU set up as the
trainer sets it up) in its own process for every setting, once on a quiet machine and once beside
``scripts/busy_core.py`` (a Python loop on one core, started before and stopped after). Settings:
1 thread; all cores; all cores with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of
spinning). Prints seconds per step and the ratio to the quiet 1-thread step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def settings(cores: int) -> dict[str, tuple[int, dict[str, str]]]:
    return {
        "1 thread": (1, {}),
        f"{cores} threads": (cores, {}),
        f"{cores} threads, OMP_WAIT_POLICY=PASSIVE": (cores, {"OMP_WAIT_POLICY": "PASSIVE"}),
    }


def step_seconds(config: str, threads: int, env: dict[str, str], steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--config", config]
        args += ["--threads", str(threads), "--steps", str(steps), "--json", str(out)]
        full = {**os.environ, **env}
        full.pop("OMP_NUM_THREADS", None)
        subprocess.run(args, env=full, capture_output=True, text=True, check=True)
        return json.loads(out.read_text())["kinds"]["no_sc"]["mean_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="toiny_aa1")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    for r in range(args.rounds):
        for shared in (False, True):
            busy = None
            if shared:
                cmd = [sys.executable, str(ROOT / "scripts" / "busy_core.py"), "--minutes", "60"]
                busy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
                time.sleep(1.0)
            try:
                for name, (threads, env) in settings(cores).items():
                    s = step_seconds(args.config, threads, env, args.steps)
                    row = {"round": r + 1, "shared": shared, "setting": name, "s_per_step": s}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.wait()
    quiet_one = statistics.median(
        x["s_per_step"] for x in rows if not x["shared"] and x["setting"] == "1 thread"
    )
    table = Table(title=f"{args.config}: seconds per step ({cores} cores, {args.rounds} rounds)")
    for column in ("machine", "setting", "s/step (median)", "vs quiet 1 thread"):
        table.add_column(column, justify="left" if column in ("machine", "setting") else "right")
    for shared in (False, True):
        for name in settings(cores):
            mine = [x["s_per_step"] for x in rows if x["shared"] == shared and x["setting"] == name]
            s = statistics.median(mine)
            table.add_row(
                "beside busy_core" if shared else "quiet", name, f"{s:.3f}", f"{quiet_one / s:.2f}x"
            )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
