"""Smoke test of the CPU recipe study: two variants, a budget of seconds, real tasks."""

import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import tiny_overrides

SCRIPT = Path(__file__).parents[1] / "scripts" / "study_cpu.py"


def study(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True
    )


def test_study_runs_two_variants_and_writes_table_json_and_plot(tmp_path):
    extra = tiny_overrides(
        eval__split="aa1:train",
        eval__num_steps=4,
        eval__num_augs=2,
        train__threads=1,
    )
    sets = [f"--set={s}" for s in extra]
    out = tmp_path / "study"
    variants = "base,steps8,no_self_cond,no_self_cond_steps16"
    args = ["--steps", "4", "--variants", variants, "--out", str(out)]
    result = study(*args, *sets, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = orjson.loads((out / "study.json").read_bytes())
    rows = {row["variant"]: row for row in payload["rows"]}
    assert set(rows) == {"base", "steps8", "no_self_cond", "no_self_cond_steps16"}
    for row in rows.values():
        assert row["steps"] == 4 and row["tasks"] == 6
        assert 0.0 <= row["pass@2"] <= row["oracle"] <= 1.0
        assert row["curve"] and row["examples_per_s"] > 0
    # an evaluation-only variant evaluates the base variant's training
    assert rows["steps8"]["trained"] == "base" and rows["steps8"]["steps"] == rows["base"]["steps"]
    assert not (out / "steps8").exists() and (out / "no_self_cond" / "checkpoints").is_dir()
    # ... into a folder of its own, beside the base variant's predictions
    evals = sorted(p.name for p in (out / "base" / "eval").iterdir())
    assert evals == ["aa1_train", "aa1_train~steps8"]
    # an evaluation-only variant of another variant reuses that variant's training
    assert rows["no_self_cond_steps16"]["trained"] == "no_self_cond"
    assert not (out / "no_self_cond_steps16").exists()
    assert (out / "no_self_cond" / "eval" / "aa1_train~no_self_cond_steps16").is_dir()
    assert (out / "curves.png").stat().st_size > 1000
    assert "CPU study" in result.stdout and "no_self_cond" in result.stdout
    # a rerun reuses every finished training and evaluation
    again = study(*args, *sets, "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "variant base" in again.stdout
    assert (
        orjson.loads((out / "study.json").read_bytes())["rows"][0]["steps"] == rows["base"]["steps"]
    )


def test_study_rejects_an_unknown_variant(tmp_path):
    result = study("--variants", "base,no_such", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown variant 'no_such' (see --list)"
