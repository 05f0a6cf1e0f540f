"""Re-score a run's saved LoRA adapters (and its untrained baseline) with one sampler setting.

    .venv/bin/python scripts/rescore_lora.py RUN CONFIG OUT.json [--set section.key=value ...]

The adapters in RUN/lora/{shared,embeddings-only,full,per-task}/ are loaded as saved (no
retraining) and scored with the same code on the config's eval split: test inputs with the
eval settings, demonstration pairs with one identity sample each (the fit measure), so every
row of the comparison table comes from one version of the evaluator. Writes OUT.json (the
rows) and OUT.<name>.json (full scores) after each row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from arcdiff.adapt import (
    BASELINE,
    ModeResult,
    adapted_task_ids,
    comparison_table,
    load_adapted,
    lora_config,
    prepare,
    score_adapted,
)
from arcdiff.console import console
from arcdiff.data.tasks import load_tasks
from arcdiff.runs.checkpoint import load_run
from arcdiff.runs.paths import write_json

NAMES = (BASELINE, "shared", "embeddings-only", "full", "per-task")


def main(argv: list[str]) -> None:
    run, config, out = Path(argv[0]), argv[1], Path(argv[2])
    overrides = [a for a in argv[3:] if a != "--set"]
    torch.set_num_threads(1)
    base = load_run(run)
    cfg = lora_config(base, config, overrides)
    tasks = load_tasks(cfg.eval.split, max_size=cfg.data.max_size)
    cpu = torch.device("cpu")
    rows = []
    for name in NAMES:
        if name == BASELINE:
            new_ids = adapted_task_ids(base.task_ids, tasks.tasks)
            adapted, train_s, steps = prepare(base, new_ids, cfg.lora, "none"), 0.0, 0
        else:
            loaded = load_adapted(run, name, device=cpu)
            adapted, train_s = loaded.adapted, loaded.manifest["train_s"]
            per_task = len(loaded.manifest["tasks"]) if adapted.mode == "per-task" else 1
            steps = loaded.manifest["steps"] * per_task
        adapted.model.eval()
        test, demos, wall = score_adapted(
            adapted, tasks, cfg, device=cpu, console=console, progress=False
        )
        row = ModeResult(
            name, adapted.mode, steps, train_s, wall, test["summary"], demos["summary"]
        )
        rows.append(row)
        write_json(out, {"overrides": overrides, "rows": [r.__dict__ for r in rows]})
        write_json(out.with_suffix(f".{name}.json"), {"test": test, "demos": demos})
        console.print(f"{name}: scored in {wall:.0f} s")
    console.print(comparison_table(rows, cfg.eval.split))


if __name__ == "__main__":
    main(sys.argv[1:])
