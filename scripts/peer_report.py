"""The peer benchmark's table, loss plot and per-system rows (scripts/bench_peer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import orjson  # noqa: E402
from rich.table import Table  # noqa: E402

from arcdiff.errors import DataError  # noqa: E402
from arcdiff.runs.paths import read_metrics  # noqa: E402

PEER_BATCH = 128  # the peer's toiny batch (configs/toiny_config_aa1.json)


def read_loss_log(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def arcdiff_row(run: Path, eval_s: float) -> dict[str, Any]:
    metrics = [m for m in read_metrics(run) if "loss" in m]
    speeds = sorted(m["examples_per_s"] for m in metrics if "examples_per_s" in m)
    return {
        "steps": max(m["step"] for m in metrics),
        "examples_per_s": speeds[len(speeds) // 2],
        "train_s": 60 * max(m["minutes"] for m in metrics),
        "eval_s": eval_s,
        "curve": [(m["minutes"], m["loss"]) for m in metrics],
    }


def peer_row(root: Path, eval_s: float, batch: int = PEER_BATCH) -> dict[str, Any]:
    return loss_log_row(root / "outputs" / "toiny" / "bench_loss.jsonl", eval_s, batch)


def loss_log_row(path: Path, eval_s: float, batch: int) -> dict[str, Any]:
    """A system's row from its JSONL log of optimizer steps (step, s, loss): the log the
    benchmarks' patches add to the diffusion peer and to mdlARC."""
    log = read_loss_log(path)
    if not log:
        raise DataError(f"{path}: no optimizer step logged")
    return {
        "steps": log[-1]["step"],
        "examples_per_s": batch * log[-1]["step"] / log[-1]["s"],
        "train_s": log[-1]["s"],
        "eval_s": eval_s,
        "curve": [(r["s"] / 60, r["loss"]) for r in log],
    }


COLUMNS = (  # (row label, key in a system's record, format)
    ("parameters", "parameters", "{:,d}"),
    ("optimizer steps", "steps", "{:,d}"),
    ("examples/s", "examples_per_s", "{:.1f}"),
    ("train s", "train_s", "{:.0f}"),
    ("eval s", "eval_s", "{:.0f}"),
    ("pass@2", "pass@2", "{:.1%}"),
    ("oracle", "oracle", "{:.1%}"),
    ("tasks solved", "tasks_solved", "{:d}"),
    ("test inputs solved", "inputs_solved", "{:d}"),
    ("size right (attempt 1)", "size_accuracy", "{:.1%}"),
    ("cells right, size-right attempt 1", "cell_accuracy", "{:.1%}"),
)


def fmt(value: Any, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{a / b:.2f}" if b else ("inf" if a else "-")


def table(systems: dict[str, dict[str, Any]], title: str) -> tuple[Table, str]:
    """The rich table and the same as Markdown."""
    both = {"arcdiff", "peer"} <= set(systems)  # the ratio column needs both
    heads = [*systems, *(["arcdiff / peer"] if both else [])]
    out = Table(title=title)
    for name in ("", *heads):
        out.add_column(name, justify="left" if not name else "right")
    md = ["| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for label, key, pattern in COLUMNS:
        cells = [fmt(s.get(key), pattern) for s in systems.values()]
        if both:
            cells.append(ratio(systems["arcdiff"].get(key), systems["peer"].get(key)))
        out.add_row(label, *cells)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    return out, "\n".join(md)


def plot_losses(systems: dict[str, dict[str, Any]], path: Path, window: int = 25) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = {
        "arcdiff": "arcdiff (cell cross-entropy + 0.1 x mean(height, width))",
        "peer": "peer (cell cross-entropy + 0.12 x (height + width))",
    }
    for name, record in systems.items():
        minutes, loss = zip(*record["curve"], strict=True)
        smooth = [
            sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1])
            for i in range(len(loss))
        ]
        ax.plot(minutes, smooth, label=f"{labels[name]}, {record['steps']:,} steps")
    ax.set(
        xlabel="minutes of training (one thread each, at the same time)",
        ylabel=f"training loss (mean of {window} steps)",
    )
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scored(summary: dict[str, Any], per_task: dict[str, Any]) -> dict[str, Any]:
    inputs = sum(round(t["pass2"] * t["test_inputs"]) for t in per_task.values())
    keys = ("pass@2", "oracle", "tasks_solved", "size_accuracy", "cell_accuracy")
    return {k: summary[k] for k in keys} | {"inputs_solved": inputs}
