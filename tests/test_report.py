import math
import re

import numpy as np
import orjson
import pytest
from rich.console import Console

from arcdiff.data.inspect import PALETTE
from arcdiff.data.tasks import load_tasks
from arcdiff.errors import CheckpointError
from arcdiff.eval.report import (
    compare_table,
    per_task_table,
    smooth,
    summary_table,
    write_report,
)
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


def _text(renderable) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_report_draws_every_task_with_truth_and_both_attempts(tmp_path):
    run = make_run(tmp_path)
    html_path = write_report(run)
    report = run / "report"
    assert html_path == report / "report.html"
    page = html_path.read_text(encoding="utf-8")
    markdown = (report / "report.md").read_text(encoding="utf-8")

    # input, truth and two attempts per test input, each a grid of the right cells
    shapes = re.findall(r'<div class="grid" data-shape="(\d+)x(\d+)"', page)
    assert len(shapes) == 4 * sum(TEST_INPUTS.values())
    sections = {
        m.group(2): (m.group(1), m.start())
        for m in re.finditer(r'<section class="task (\w+)" id="aa1_eval-(\w+)">', page)
    }
    assert {k: v[0] for k, v in sections.items()} == {
        SOLVED: "solved",
        PARTIAL: "partial",
        UNSOLVED: "unsolved",
    }
    assert sections[SOLVED][1] < sections[PARTIAL][1] < sections[UNSOLVED][1]  # solved first
    solved_html = page[sections[SOLVED][1] : sections[PARTIAL][1]]
    assert '<span class="mark">✓</span>' in solved_html
    grids = re.findall(r'<div class="grid" data-shape="(\d+)x(\d+)"[^>]*>(.*?)</div>', solved_html)
    truth = load_tasks("aa1:eval", ids=[SOLVED]).solutions[SOLVED][0]
    h, w, cells = grids[1]
    assert (int(h), int(w)) == truth.shape
    assert [int(c) for c in re.findall(r"class=c(\d)", cells)] == truth.ravel().tolist()
    assert grids[2] == grids[1]  # attempt 1 is the truth
    assert "attempt 1 · 9x9 · 5/8 votes ✓" in solved_html
    for colour in PALETTE:
        assert colour.lower() in page.lower()

    # markdown: one small PNG panel per task, plus the curves, all present and non-empty
    for task_id in TEST_INPUTS:
        assert task_id in page
        image = f"tasks/aa1_eval/{task_id}.png"
        assert f"]({image})" in markdown
        assert (report / image).read_bytes().startswith(MARKER_PNG)
    assert f"### ✓ `{SOLVED}`" in markdown and f"### ✗ `{UNSOLVED}`" in markdown
    for curve in ("loss.png", "lr.png", "val_acc.png", "val_loss.png", "quick_eval.png"):
        data = (report / curve).read_bytes()
        assert data.startswith(MARKER_PNG) and len(data) > 5000
        assert f'<img src="{curve}"' in page and f"]({curve})" in markdown
    assert "<details><summary>resolved config" in page
    assert "50.0%" in page  # pass@2 = (1 + 0 + 0.5) / 3


def test_report_of_a_run_without_eval_or_metrics_says_what_is_missing(tmp_path):
    run = make_run(tmp_path, with_eval=False, with_metrics=False)
    page = write_report(run).read_text(encoding="utf-8")
    markdown = (run / "report" / "report.md").read_text(encoding="utf-8")
    for text in (page, markdown):
        assert "no evaluation yet" in text and "no metrics.jsonl yet" in text
    assert not list((run / "report").glob("*.png"))


def test_report_redraws_without_stale_panels(tmp_path):
    run = make_run(tmp_path, with_metrics=False)
    write_report(run)
    stale = run / "report" / "tasks" / "aa1_eval" / "00000000.png"
    stale.write_bytes(b"old")
    write_report(run)
    assert not stale.exists()
    assert (run / "report" / "tasks" / "aa1_eval" / f"{SOLVED}.png").exists()


def test_a_missing_run_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory") as error:
        write_report(tmp_path / "nope")
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="not a run directory"):
        compare_table([tmp_path])


def test_compare_table_has_one_column_per_run(tmp_path):
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b", with_eval=False)]
    table = compare_table(runs)
    assert len(table.columns) == 1 + len(runs)
    text = _text(table)
    assert "aa1:eval" in text and "50.0%" in text
    assert "300 (stopped: max_steps)" in text


def test_terminal_tables_show_scores_and_solved_tasks_first(tmp_path):
    scores = orjson.loads((make_run(tmp_path) / "eval/aa1_eval/scores.json").read_bytes())
    summary = _text(summary_table(scores))
    assert re.search(r"pass@2\W+50\.0%", summary)
    assert re.search(r"tasks solved\W+1 / 3", summary)
    assert "8 (majority vote)" in summary
    per_task = _text(per_task_table(scores))
    assert per_task.index(SOLVED) < per_task.index(PARTIAL) < per_task.index(UNSOLVED)
    assert "1 of 3 task(s) solved" in per_task


def test_smoothing_is_bias_corrected():
    assert np.allclose(smooth(np.full(5, 2.0), span=10), 2.0)  # no pull towards zero at start
    assert np.allclose(smooth(np.array([0.0, 1.0, 4.0]), span=1), [0.0, 1.0, 4.0])
    noisy = np.tile([0.0, 1.0], 50)
    assert smooth(noisy, span=20)[50:].std() < 0.2 * noisy.std()
