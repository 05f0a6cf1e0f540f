"""CPU recipe study: named variants of a preset, same wall-clock budget, same evaluation.

Each variant is the base config (default ``toiny_aa1``) with a few ``section.key`` overrides.
Every variant trains from the same seed on the same data for the same number of minutes
(``--minutes``; optimizer steps are whatever fits) or the same number of optimizer steps
(``--steps``, the fair comparison when other work shares the CPU), then is evaluated the
same way (the base config's eval section: aa1 eval tasks with every grid <= 10, ``--maj``
with 8 augmentations, unless a variant changes the sampler). One row per variant: examples/s,
optimizer steps, final training loss, pass@2, oracle, size accuracy, cell accuracy of
size-correct candidates beside the copy-the-input baseline, and wall times.

Writes ``<out>/study.json`` (rows + the exact overrides), ``<out>/curves.png`` (training loss
against minutes and against steps) and one run directory per trained variant; prints a rich
table. Variants that change only the evaluation (sampling steps, EMA) evaluate the run of the
variant with the same training (``base``, or ``no_self_cond`` for ``no_self_cond_steps16``);
``--trained RUN`` lets an existing run of the base config stand for ``base`` (the decoding
and ranking variants ``plain``, ``conf_*``, ``*_poe`` on the preset's own 15-minute run).
Finished trainings and evaluations are reused, so an interrupted study resumes
(an interrupted training restarts).

    python scripts/study_cpu.py --minutes 15 --variants base,no_input_colour,absorbing
    python scripts/study_cpu.py --steps 500 --variants base,buckets   # fair on a shared CPU
    python scripts/study_cpu.py --trained outputs/toiny_aa1 --variants plain,conf_poe
    python scripts/study_cpu.py --list
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import orjson  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from arcdiff.config import load_config  # noqa: E402
from arcdiff.console import console, err_console  # noqa: E402
from arcdiff.errors import ArcdiffError  # noqa: E402
from arcdiff.eval.evaluate import evaluate_run  # noqa: E402
from arcdiff.runs.evals import split_dirname  # noqa: E402
from arcdiff.runs.paths import read_metrics  # noqa: E402
from arcdiff.train.trainer import train  # noqa: E402


def decoding(sampler: str, *extra: str, samples: int = 1, ranking: str = "vote") -> list[str]:
    """The eval overrides of a decoding-and-ranking variant (issue 15)."""
    return [
        f'eval.sampler="{sampler}"',
        f"eval.samples={samples}",
        f'eval.ranking="{ranking}"',
        *extra,
    ]


ROPE = ["model.rope=true", "model.abs_pos=false"]
SELFSUP = ["data.self_supervised=0.25"]
MUON = ['train.optimizer="muon"']
ABSORBING = ['diffusion.kernel="absorbing"']
D256_BF16 = ["model.d_model=256", "model.n_heads=8", "train.cpu_bf16=true"]

# name -> (overrides on top of the base config, what the variant tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "base": ([], "the preset as it is"),
    "no_input_colour": (["model.input_colour=false"], "output cells do not embed the input colour"),
    "no_size_copy": (["model.size_copy=false"], "size head without the copy-the-input classes"),
    "absorbing": (ABSORBING, "absorbing (mask) kernel instead of uniform"),
    "no_self_cond": (
        ["model.self_condition=false", "train.self_cond_prob=0.0"],
        "no self-conditioning (one pass)",
    ),
    "steps16": (["eval.num_steps=16"], "16 sampling steps instead of 32"),
    "steps8": (["eval.num_steps=8"], "8 sampling steps instead of 32"),
    "no_self_cond_steps16": (
        ["model.self_condition=false", "train.self_cond_prob=0.0", "eval.num_steps=16"],
        "no self-conditioning, 16 sampling steps (no_self_cond's training)",
    ),
    "absorbing_steps16": (
        ['diffusion.kernel="absorbing"', "eval.num_steps=16"],
        "absorbing kernel, 16 sampling steps (absorbing's training)",
    ),
    "augs16_steps16": (
        ["eval.num_augs=16", "eval.num_steps=16"],
        "16 views x 16 steps: twice the votes for the sampling cost of 8 x 32",
    ),
    "deep_narrow": (
        ["model.d_model=96", "model.n_heads=4", "model.n_layers=7"],
        "depth for width at about equal FLOPs",
    ),
    "wide_shallow": (
        ["model.d_model=176", "model.n_heads=4", "model.n_layers=2"],
        "width for depth at about equal FLOPs",
    ),
    "lr3e-3": (["train.lr=0.003"], "learning rate 3e-3"),
    "lr3e-4": (["train.lr=0.0003"], "learning rate 3e-4"),
    "batch32": (["train.batch_size=32"], "batch 32 (twice the optimizer steps)"),
    "ema0.95": (["train.ema_decay=0.95"], "EMA decay 0.95"),
    "no_ema": (["eval.use_ema=false"], "raw weights instead of EMA at evaluation"),
    "no_size_vote": (
        ["eval.size_vote=false"],
        "each view reads its own size head (no vote, no demonstration prior)",
    ),
    "no_size_prior": (["eval.size_prior=false"], "size vote without the demonstration prior"),
    "buckets": (["data.bucket_window=16"], "size buckets: batches cropped to their largest grid"),
    "eval_weight0.8": (["data.eval_weight=0.8"], "80% of examples from eval demonstrations"),
    "fp32": (["train.bf16=false"], "float32 autocast off"),
    # learning faster (issue 14): positions, self-supervised grids, optimizer, width in bf16
    "rope": (ROPE, "2D rotary positions instead of learned row/column embeddings"),
    "rope_abs": (["model.rope=true"], "2D rotary positions and the learned row/column embeddings"),
    "selfsup": (SELFSUP, "a quarter of the examples denoise an input grid alone"),
    "rope_selfsup": (ROPE + SELFSUP, "rope and self-supervised grids"),
    "muon": (MUON, "Muon on the blocks' matrices (lr 0.02), AdamW on the rest"),
    "muon_lr0.01": ([*MUON, "train.muon_lr=0.01"], "Muon at lr 0.01"),
    "muon_lr0.04": ([*MUON, "train.muon_lr=0.04"], "Muon at lr 0.04"),
    "rope_selfsup_muon": (ROPE + SELFSUP + MUON, "rope, self-supervised grids and Muon"),
    "rope_selfsup_d256_bf16": (
        ROPE + SELFSUP + D256_BF16,
        "rope and self-supervised grids, d 256 (8 heads) under CPU bf16 autocast",
    ),
    "rope_selfsup_muon_d256_bf16": (
        ROPE + SELFSUP + MUON + D256_BF16,
        "rope, self-supervised grids and Muon, d 256 (8 heads) under CPU bf16 autocast",
    ),
    "rope_muon": (ROPE + MUON, "rope and Muon"),
    # decoding and ranking (issue 15): evaluation only, on base's training
    "plain": (
        decoding("argmax"),
        "deterministic steps, count-then-confidence vote (the rule before samplers had names)",
    ),
    "plain_poe": (
        decoding("argmax", ranking="poe"),
        "deterministic steps, product-of-experts ranking over the 8 views",
    ),
    "conf": (decoding("confidence"), "most confident cells first (argmax colours), vote"),
    "conf_poe": (
        decoding("confidence", ranking="poe"),
        "most confident cells first (argmax colours), product of experts",
    ),
    "conf_remask": (
        decoding("confidence", "eval.remask=true"),
        "most confident cells first, decided cells may be re-noised, vote",
    ),
    "conf_t1_k4": (
        decoding("confidence", "eval.temperature=1.0", samples=4),
        "4 confidence-ordered draws per view at temperature 1, vote",
    ),
    "conf_t1_k4_poe": (
        decoding("confidence", "eval.temperature=1.0", samples=4, ranking="poe"),
        "4 confidence-ordered draws per view at temperature 1, product of experts",
    ),
    "conf_t05_k4_poe": (
        decoding("confidence", "eval.temperature=0.5", samples=4, ranking="poe"),
        "4 confidence-ordered draws per view at temperature 0.5, product of experts",
    ),
    "conf_t05_k4_poe_top32": (
        decoding(
            "confidence", "eval.temperature=0.5", "eval.rank_top=32", samples=4, ranking="poe"
        ),
        "conf_t05_k4_poe scoring every candidate (up to 32), not the 8 most visited",
    ),
    "anc_k4_poe": (
        decoding("ancestral", samples=4, ranking="poe"),
        "4 ancestral draws per view, product of experts",
    ),
    # decoding on an absorbing-kernel training, where argmax sampling is one-shot (issue 15)
    "absorbing_conf": (
        [*ABSORBING, *decoding("confidence")],
        "absorbing kernel, most confident cells first (argmax colours), vote",
    ),
    "absorbing_conf_poe": (
        [*ABSORBING, *decoding("confidence", ranking="poe")],
        "absorbing kernel, most confident cells first, product of experts",
    ),
    "absorbing_conf_t05_k4_poe": (
        [*ABSORBING, *decoding("confidence", "eval.temperature=0.5", samples=4, ranking="poe")],
        "absorbing kernel, 4 confidence-ordered draws per view at temperature 0.5, poe",
    ),
    "absorbing_plain_poe": (
        [*ABSORBING, *decoding("argmax", ranking="poe")],
        "absorbing kernel, one-shot argmax, product of experts",
    ),
}

COLUMNS = (
    ("examples/s", "examples_per_s", "{:.1f}"),
    ("steps", "steps", "{:d}"),
    ("loss", "final_loss", "{:.3f}"),
    ("pass@2", "pass@2", "{:.1%}"),
    ("oracle", "oracle", "{:.1%}"),
    ("size acc", "size_accuracy", "{:.1%}"),
    ("cell acc", "cell_accuracy", "{:.1%}"),
    ("same-shape cell", "cell_accuracy_same_shape", "{:.1%}"),
    ("copy", "copy_baseline_same_shape", "{:.1%}"),
    ("solved", "tasks_solved", "{:d}"),
    ("train s", "train_s", "{:.0f}"),
    ("eval s", "eval_s", "{:.0f}"),
)


def trained_by(name: str) -> str:
    """The variant whose training ``name`` reuses: the one with the same non-``eval.``
    overrides (``base`` for a variant that changes only the evaluation); itself otherwise."""
    training = [o for o in VARIANTS[name][0] if not o.startswith("eval.")]
    if training == VARIANTS[name][0]:
        return name
    return next((v for v, (o, _) in VARIANTS.items() if o == training), name)


def train_variant(cfg: Any, run_dir: Path, progress: bool) -> tuple[int, float]:
    """Train (or, for a finished run, reuse) one variant; returns (steps, seconds)."""
    done = run_dir / "study_train.json"
    if not done.exists():
        start = time.monotonic()
        result = train(cfg, run_dir, progress=progress, console=console)
        record = {"steps": result.step, "train_s": time.monotonic() - start}
        done.write_bytes(orjson.dumps(record))
    record = orjson.loads(done.read_bytes())
    return record["steps"], record["train_s"]


def budget_overrides(minutes: float | None, steps: int | None) -> list[str]:
    """A wall-clock budget, or a fixed number of optimizer steps (fair under a shared CPU)."""
    if steps is not None:
        return [f"train.max_steps={steps}", "train.max_minutes=null"]
    return [f"train.max_minutes={minutes}", "train.max_steps=1000000"]


def run_variant(
    name: str,
    base: str,
    extra: list[str],
    budget: list[str],
    out: Path,
    progress: bool,
    reuse: Path | None = None,
) -> dict[str, Any]:
    """Train one variant on ``budget`` (or reuse its training) and evaluate it. ``reuse``: a
    trained run that stands for ``base`` (nothing is trained for base or its evaluation-only
    variants)."""
    overrides, _ = VARIANTS[name]
    common = [*budget, "train.quick_eval_every=0"]
    cfg = load_config(base, [*extra, *overrides, *common])
    source = trained_by(name)  # an evaluation-only variant reuses that variant's training
    train_cfg = (
        cfg if source == name else load_config(base, [*extra, *VARIANTS[source][0], *common])
    )
    if source == "base" and reuse is not None:  # an existing run stands for base's training
        trained = reuse
        steps = max(m["step"] for m in read_metrics(reuse) if "step" in m)
        train_s = 60 * max(m.get("minutes", 0.0) for m in read_metrics(reuse))
    else:
        trained = out / source
        steps, train_s = train_variant(train_cfg, trained, progress)
    row_path = out / f"{name}.json"
    if not row_path.exists():
        settings = cfg.eval
        start = time.monotonic()
        # an evaluation-only variant scores the run it shares into eval/<split>~<variant>/
        tag = (
            f"{split_dirname(settings.split)}~{name}"
            if source != name or reuse is not None
            else None
        )
        scores = evaluate_run(trained, settings, console=console, progress=progress, out_name=tag)
        record = {"summary": scores["summary"], "eval_s": time.monotonic() - start}
        row_path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    record = orjson.loads(row_path.read_bytes())
    metrics = [m for m in read_metrics(trained) if "loss" in m]
    tail = metrics[-20:]
    speeds = [m["examples_per_s"] for m in metrics if "examples_per_s" in m]
    return {
        "variant": name,
        "overrides": overrides,
        "trained": trained.name,
        "steps": steps,
        "final_loss": sum(m["loss"] for m in tail) / max(len(tail), 1),
        "examples_per_s": sorted(speeds)[len(speeds) // 2] if speeds else 0.0,
        "train_s": train_s,
        "eval_s": record["eval_s"],
        **record["summary"],
        "curve": [(m["step"], m["minutes"], m["loss"]) for m in metrics],
    }


def table(rows: list[dict[str, Any]], budget: str) -> Table:
    out = Table(title=f"CPU study: {budget} of training per variant")
    out.add_column("variant", style="bold")
    for title, _, _ in COLUMNS:
        out.add_column(title, justify="right")
    for row in rows:
        out.add_row(row["variant"], *(fmt.format(row[key]) for _, key, fmt in COLUMNS))
    return out


def plot_curves(rows: list[dict[str, Any]], path: Path, window: int = 25) -> None:
    """Training loss of each trained variant (evaluation-only variants share their curve)."""
    fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in (r for r in rows if r["trained"] == r["variant"]):
        steps, minutes, loss = zip(*row["curve"], strict=True) if row["curve"] else ([], [], [])
        smooth = [
            sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1])
            for i in range(len(loss))
        ]
        by_time.plot(minutes, smooth, label=row["variant"])
        by_step.plot(steps, smooth, label=row["variant"])
    by_time.set(xlabel="minutes", ylabel=f"training loss (mean of {window} steps)")
    by_step.set(xlabel="optimizer step", ylabel="training loss")
    if by_time.lines:  # none when every row only evaluates (--trained)
        by_time.legend(fontsize=8)
    for ax in (by_time, by_step):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="toiny_aa1", help="preset name or config file")
    parser.add_argument("--variants", default="base", help="comma-separated variant names")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per variant")
    parser.add_argument(
        "--steps", type=int, default=None, help="a fixed step budget per variant instead"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/study_cpu"))
    parser.add_argument(
        "--set", action="append", default=[], help="extra override for every variant"
    )
    parser.add_argument(
        "--trained",
        type=Path,
        default=None,
        help="a trained run of the base config to evaluate instead of training base "
        "(its scores go to RUN/eval/<split>~<variant>/)",
    )
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name, (overrides, what) in VARIANTS.items():
            console.print(f"[bold]{name}[/]: {what}  {' '.join(overrides)}")
        return 0
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        err_console.print(f"error: unknown variant {unknown[0]!r} (see --list)")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    budget = budget_overrides(args.minutes, args.steps)
    described = f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} min"
    try:
        for name in names:
            console.rule(f"variant {name}: {VARIANTS[name][1]}")
            rows.append(
                run_variant(
                    name,
                    args.base,
                    args.set,
                    budget,
                    args.out,
                    not args.no_progress,
                    reuse=args.trained,
                )
            )
    except ArcdiffError as e:
        err_console.print(f"error: {e}")
        return 1
    Console(width=max(console.width, 150)).print(table(rows, described))
    payload = {"base": args.base, "budget": described, "extra": args.set, "rows": rows}
    (args.out / "study.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    plot_curves(rows, args.out / "curves.png")
    console.print(f"wrote {args.out / 'study.json'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
