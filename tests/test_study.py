"""Smoke test of the CPU recipe study: two variants, a budget of seconds, real tasks.

The script runs in this process through its main(): a new process would spend seconds
importing torch again."""

import orjson

from tests.conftest import load_script, tiny_overrides


def test_study_runs_two_variants_and_writes_table_json_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main = load_script("study_cpu").main
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
    assert main([*args, *sets, "--no-progress"]) == 0, capsys.readouterr().err[-2000:]
    stdout = capsys.readouterr().out
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
    assert "CPU study" in stdout and "no_self_cond" in stdout
    # a rerun reuses every finished training and evaluation
    mtime = (out / "base" / "checkpoints" / "final.pt").stat().st_mtime_ns
    assert main([*args, *sets, "--no-progress"]) == 0
    assert "variant base" in capsys.readouterr().out
    assert (out / "base" / "checkpoints" / "final.pt").stat().st_mtime_ns == mtime
    assert (
        orjson.loads((out / "study.json").read_bytes())["rows"][0]["steps"] == rows["base"]["steps"]
    )
    # --trained: an existing run stands for base; the decoding variants only evaluate it
    reused = tmp_path / "reused"
    args = ["--trained", str(out / "base"), "--variants", "plain,conf_t1_k4_poe"]
    assert main([*args, "--out", str(reused), *sets, "--no-progress"]) == 0
    rows = {r["variant"]: r for r in orjson.loads((reused / "study.json").read_bytes())["rows"]}
    assert rows["plain"]["steps"] == rows["conf_t1_k4_poe"]["steps"] == 4
    assert not (reused / "base").exists() and not (reused / "plain").exists()
    evals = sorted(p.name for p in (out / "base" / "eval").iterdir())
    assert evals == ["aa1_train", "aa1_train~conf_t1_k4_poe", "aa1_train~plain", "aa1_train~steps8"]
    settings = orjson.loads(
        (out / "base" / "eval" / "aa1_train~conf_t1_k4_poe" / "scores.json").read_bytes()
    )["settings"]
    assert (settings["sampler"], settings["samples"], settings["ranking"]) == (
        "confidence",
        4,
        "poe",
    )


def test_the_script_rejects_an_unknown_variant_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert load_script("study_cpu").main(["--variants", "base,no_such"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: unknown variant 'no_such' (see --list)"
    assert not any(tmp_path.iterdir())  # refused before writing anything
