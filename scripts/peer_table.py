"""One table of systems over seeds: arcdiff (a scripts/seeds.py study) beside the peers'
benchmark folders (scripts/bench_peer.py --peer-only, scripts/bench_mdlarc.py), every row
scored by arcdiff's scorer on the same tasks.

Each system is a name and its folders, one per seed; a row gives the mean +- sd over seeds of
steps, examples/s, pass@2, tasks and test inputs solved, cells right and evaluation seconds,
and pass@2's difference from arcdiff paired task by task over the seeds both have (a bootstrap
over tasks: scripts/seeds.py compare's statistic), with its 95% interval.

    python scripts/peer_table.py --arcdiff S/preset15 --seeds 0,1 \\
        --system "peer, batch 128=S/peer_b128_s0,S/peer_b128_s1" \\
        --system "mdlARC=S/mdlarc_s0,S/mdlarc_s1" --out S/peer_table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_report import arcdiff_row  # noqa: E402
from seeds import folder_rows, seed_dirs  # noqa: E402

from arcdiff.report.stats import mean_sd, paired_bootstrap, task_matrix  # noqa: E402
from arcdiff.runs.paths import write_json  # noqa: E402

console = Console(width=200)  # the table is wide
COLUMNS = (  # (key, header, kind)
    ("steps", "steps", "int"),
    ("examples_per_s", "examples/s", "float"),
    ("pass@2", "pass@2", "pct"),
    ("tasks_solved", "tasks", "float"),
    ("inputs_solved", "test inputs", "float"),
    ("size", "size right", "pct"),
    ("cells", "cells right", "pct"),
    ("eval_s", "eval s", "int"),
)


def arcdiff_seeds(study: Path, seeds: list[int], folder: str) -> dict[int, dict[str, Any]]:
    """A seeds.py study's rows for ``seeds``, with each run's steps and examples/s."""
    rows = folder_rows(study, folder)
    out = {}
    for run in seed_dirs(study):
        seed = int(run.name[4:])
        if seed not in seeds:
            continue
        if run.name not in rows:
            raise SystemExit(f"{run}: no eval/{folder}/scores.json")
        row = rows[run.name]
        speed = arcdiff_row(run, row["eval_s"])
        out[seed] = row | {"steps": speed["steps"], "examples_per_s": speed["examples_per_s"]}
    missing = set(seeds) - set(out)
    if missing:
        raise SystemExit(f"{study}: no seed{min(missing)} run")
    return out


def bench_seed(folder: Path) -> tuple[int, dict[str, Any]]:
    """A peer benchmark folder's seed and row (its bench.json's one non-arcdiff system)."""
    path = folder / "bench.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not there (the benchmark has not finished)")
    record = orjson.loads(path.read_bytes())
    peers = {k: v for k, v in record["systems"].items() if k != "arcdiff"}
    if len(peers) != 1:
        raise SystemExit(f"{path}: {len(peers)} peer systems, expected one")
    (row,) = peers.values()
    seed = row.get("seed", record.get("seed"))
    if seed is None:
        raise SystemExit(f"{path}: no seed recorded")
    per_task = {t: v["pass2"] if isinstance(v, dict) else v for t, v in row["per_task"].items()}
    row = row | {"cells": row["cell_accuracy"], "size": row["size_accuracy"]}
    return int(seed), row | {"per_task": per_task}


def system_row(name: str, seeds: dict[int, dict], base: dict[int, dict]) -> dict[str, Any]:
    """Mean +- sd of every column over the seeds, and pass@2 - arcdiff's, paired."""
    row: dict[str, Any] = {"name": name, "seeds": sorted(seeds)}
    for key, _, _ in COLUMNS:
        values = [s[key] for s in seeds.values() if s.get(key) is not None]
        if values:
            m = mean_sd(values)
            row[key] = {"mean": m.mean, "sd": m.sd, "values": values}
    common = sorted(set(seeds) & set(base))
    if common:
        tasks = sorted(set().union(*(base[s]["per_task"] for s in common)))
        a = task_matrix([base[s]["per_task"] for s in common], tasks)
        b = task_matrix([seeds[s]["per_task"] for s in common], tasks)
        paired = paired_bootstrap(a, b)
        row["vs_arcdiff"] = vars(paired) | {"significant": paired.significant}
    return row


def cell(stat: dict | None, kind: str) -> str:
    if stat is None:
        return "-"
    m, sd = stat["mean"], stat["sd"]
    if kind == "pct":
        return f"{100 * m:.1f}% +- {100 * sd:.1f}"
    return f"{m:,.0f} +- {sd:,.0f}" if kind == "int" else f"{m:,.1f} +- {sd:,.1f}"


def versus(row: dict[str, Any]) -> str:
    v = row.get("vs_arcdiff")
    if v is None:
        return "-"
    return f"{100 * v['diff']:+.2f} [{100 * v['low']:+.2f}, {100 * v['high']:+.2f}] p={v['p']:.2f}"


def render(rows: list[dict[str, Any]], title: str) -> tuple[Table, str]:
    heads = ["system", "seeds", *(h for _, h, _ in COLUMNS), "pass@2 - arcdiff (points, 95%)"]
    out = Table(title=title)
    for h in heads:
        out.add_column(h, justify="left" if h == "system" else "right")
    md = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"])
        cells = [r["name"], seeds, *(cell(r.get(k), kind) for k, _, kind in COLUMNS), versus(r)]
        out.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    return out, "\n".join(md)


def parse_system(text: str) -> tuple[str, list[Path]]:
    name, sep, folders = text.partition("=")
    if not sep or not folders:
        raise SystemExit(f"--system {text!r}: expected NAME=FOLDER[,FOLDER...]")
    return name.strip(), [Path(f) for f in folders.split(",")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arcdiff", type=Path, required=True, help="a scripts/seeds.py study")
    parser.add_argument("--seeds", default="0,1", help="arcdiff's seeds in the table")
    parser.add_argument("--folder", default="aa1_eval", help="the study's evaluation folder")
    parser.add_argument("--system", action="append", default=[], help="NAME=FOLDER,FOLDER,...")
    parser.add_argument("--title", default="78 tasks of aa1:eval (grids <= 10), 15 minutes each")
    parser.add_argument("--out", type=Path, help="writes table.json and table.md here")
    args = parser.parse_args(argv)
    base = arcdiff_seeds(args.arcdiff, [int(s) for s in args.seeds.split(",")], args.folder)
    rows = [system_row("arcdiff", base, {})]
    for text in args.system:
        name, folders = parse_system(text)
        seeds = dict(bench_seed(f) for f in folders)
        if len(seeds) != len(folders):
            raise SystemExit(f"--system {name}: two folders of one seed")
        rows.append(system_row(name, seeds, base))
    rich_table, md = render(rows, args.title)
    console.print(rich_table)
    record = {"title": args.title, "command": " ".join(sys.argv), "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "table.json", record)
        (args.out / "table.md").write_text(f"{args.title}\n\n{md}\n")
        console.print(f"wrote {args.out / 'table.json'} and table.md", markup=False)
    return record


if __name__ == "__main__":
    main()
