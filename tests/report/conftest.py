"""A fake run directory with real aa1:eval tasks, scores, predictions and metrics, for reports."""

import math

import numpy as np
import orjson

from arcdiff.data.tasks import load_tasks
from arcdiff.eval.score import TestPrediction, predictions_json, score_split
from arcdiff.eval.vote import Candidate

# Real aa1:eval tasks: one solved at pass@1, one 30x30 left unsolved (the input copied), and one
# with two test inputs of which only the first is solved (by attempt 2): pass@2 = 0.5.
SOLVED, UNSOLVED, PARTIAL = "0692e18c", "05a7bcf2", "12997ef3"
TEST_INPUTS = {SOLVED: 1, UNSOLVED: 1, PARTIAL: 2}
MARKER_PNG = b"\x89PNG\r\n\x1a\n"


def _prediction(first: np.ndarray, second: np.ndarray) -> TestPrediction:
    candidates = (Candidate(first, 5, 0.9), Candidate(second, 3, 0.6))
    return TestPrediction(candidates=candidates, attempt_1=first, attempt_2=second)


def _write(path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(payload))


def _metrics(steps: int = 300) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        loss = 0.3 + 2.2 * math.exp(-step / 80) + 0.05 * math.sin(step)
        row = {
            "step": step,
            "loss": loss,
            "colour_loss": 0.9 * loss,
            "size_loss": 0.5 * loss,
            "lr": 1e-3 * min(1.0, step / 20),
            "grad_norm": 1.0,
            "examples_per_s": 100.0,
            "minutes": step / 60,
        }
        if step == 77:
            row |= {"loss": "nan", "skipped": 1}
        if step % 50 == 0:
            for b in range(5):
                row[f"val_loss_b{b}"] = loss + 0.1 * b
                row[f"val_acc_b{b}"] = 0.9 - 0.1 * b - 0.1 * math.exp(-step / 100)
            row |= {"val_loss": loss + 0.2, "val_acc": 0.7, "quick_pass2": step / 1000}
            row["quick_oracle"] = step / 600
        rows.append(row)
    return rows + [{"step": steps, "done": "max_steps", "skipped_steps": 1}]


def make_run(root, name="fake", *, with_eval=True, with_metrics=True):
    run = root / name
    run.mkdir(parents=True)
    _write(run / "config.json", {"name": name, "train": {"max_steps": 300}})
    if with_metrics:
        lines = b"".join(orjson.dumps(r) + b"\n" for r in _metrics())
        (run / "metrics.jsonl").write_bytes(lines)
    if not with_eval:
        return run
    tasks = load_tasks("aa1:eval", ids=[SOLVED, UNSOLVED, PARTIAL])
    truth = tasks.solutions
    inputs = {t.id: t.test_inputs for t in tasks}
    zeros = np.zeros((2, 2), dtype=np.uint8)
    predictions = {
        SOLVED: [_prediction(truth[SOLVED][0], inputs[SOLVED][0])],
        UNSOLVED: [_prediction(inputs[UNSOLVED][0], zeros)],
        PARTIAL: [_prediction(zeros, truth[PARTIAL][0]), _prediction(zeros, inputs[PARTIAL][1])],
    }
    scores = score_split(predictions, tasks.tasks, tasks.solutions)
    scores["settings"] = {
        "split": "aa1:eval",
        "num_steps": 8,
        "maj": True,
        "num_augs": 8,
        "limit": None,
        "checkpoint": "final",
        "use_ema": True,
        "batch_size": 256,
        "seed": 0,
        "run": str(run),
        "device": "cpu",
        "wall_s": 12.5,
        "step": 300,
    }
    out = run / "eval" / "aa1_eval"
    _write(out / "scores.json", scores)
    _write(out / "predictions.json", predictions_json(predictions))
    return run
