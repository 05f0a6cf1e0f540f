import base64
import re
import shutil
from pathlib import Path

import pytest

from arcdiff.data.inspect import PALETTE
from arcdiff.data.tasks import load_tasks
from arcdiff.errors import CheckpointError
from arcdiff.report import compare_table, write_report
from tests.report.conftest import MARKER_PNG, PARTIAL, SOLVED, TEST_INPUTS, UNSOLVED, make_run


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
        embedded = f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}"'
        assert embedded in page and f"]({curve})" in markdown
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


def test_report_html_alone_is_the_whole_report(tmp_path):
    """report.html refers to no file: copied alone, it still shows every plot (its images
    are data: URIs, its styles inline); the only links are to its own sections."""
    run = make_run(tmp_path / "runs")
    alone = tmp_path / "mailed"
    alone.mkdir()
    page = Path(shutil.copy(write_report(run), alone)).read_text(encoding="utf-8")
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    references += re.findall(r"url\(([^)]*)\)", page)
    assert references, "the page has images and section links"
    external = [r for r in references if not r.startswith(("data:image/png;base64,", "#"))]
    assert external == []
    assert page.count('<img src="data:image/png;base64,') == 5  # every curve of make_run
