"""scripts/seeds.py on fabricated studies: rows, mean +- sd, the paired comparison."""

import orjson
import pytest

from tests.conftest import load_script

TASKS = [f"t{i:02d}" for i in range(20)]


def write_scores(folder, solved, step=100):
    per_task = {t: {"pass2": float(t in solved), "test_inputs": 1} for t in TASKS}
    summary = {
        "pass@2": len(solved) / len(TASKS),
        "tasks_solved": len(solved),
        "oracle": len(solved) / len(TASKS),
        "cell_accuracy": 0.5,
        "size_accuracy": 0.9,
    }
    folder.mkdir(parents=True)
    payload = {"summary": summary, "per_task": per_task, "settings": {"step": step, "wall_s": 9}}
    (folder / "scores.json").write_bytes(orjson.dumps(payload))


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    manifest = {"config": "toiny_aa1", "split": "aa1:eval", "snapshots": [], "minutes": 15}
    (root / "study.json").write_bytes(orjson.dumps(manifest))
    for seed, solved in enumerate([TASKS[:2], TASKS[:4], TASKS[1:4]]):
        write_scores(root / f"seed{seed}" / "eval" / "aa1_eval", solved, step=100 + seed)
        write_scores(root / f"seed{seed}" / "eval" / "aa1_eval~augs16", TASKS[:12])
    return root


def test_show_writes_rows_and_mean_sd(study):
    seeds = load_script("seeds")
    (study / "seed0.log").write_text("a seed's log is not a run\n")
    (study / "seed10").mkdir()
    assert [p.name for p in seeds.seed_dirs(study)] == ["seed0", "seed1", "seed2", "seed10"]
    report = seeds.show(study)
    plain = report["evaluations"]["aa1_eval"]
    assert sorted(plain["rows"]) == ["seed0", "seed1", "seed2"]
    assert plain["summary"]["tasks_solved"] == {"mean": 3.0, "sd": 1.0, "n": 3}
    assert plain["summary"]["step"]["mean"] == 101.0
    assert orjson.loads((study / "seeds.json").read_bytes())["evaluations"].keys() == {
        "aa1_eval",
        "aa1_eval~augs16",
    }


def test_compare_pairs_two_evaluations_of_the_same_seeds(study, tmp_path):
    seeds = load_script("seeds")
    out = tmp_path / "cmp.json"
    seeds.main(["compare", str(study), str(study), "--b-folder", "aa1_eval~augs16",
                "--json", str(out)])  # fmt: skip
    result = orjson.loads(out.read_bytes())
    assert result["paired"] == ["seed0", "seed1", "seed2"] and result["seeds"] == 3
    assert result["diff"] == pytest.approx(12 / 20 - 3 / 20)
    assert result["significant"] and result["low"] > 0


def test_a_failing_seed_stops_its_own_chain_only(tmp_path):
    seeds = load_script("seeds")
    chains = {
        "seed0": [["evaluate", "--run", str(tmp_path / "nowhere")], ["config", "show"]],
        "seed1": [["config", "show"]],
    }
    failed = seeds._chains(1, chains, tmp_path)
    assert len(failed) == 1 and "arcdiff evaluate failed" in failed[0]
    assert "config" in (tmp_path / "seed1.log").read_text()  # the other seed ran
    assert "$ arcdiff config show" not in (tmp_path / "seed0.log").read_text()  # its chain stopped


def write_bench(folder, seed, solved, steps=50):
    """A peer benchmark folder (scripts/bench_peer.py --peer-only's bench.json)."""
    per_task = {t: {"pass2": float(t in solved), "test_inputs": 1} for t in TASKS}
    row = {"steps": steps, "examples_per_s": 16.0, "eval_s": 1200.0, "pass@2": len(solved) / 20,
           "tasks_solved": len(solved), "inputs_solved": len(solved), "cell_accuracy": 0.4,
           "size_accuracy": 0.5,
           "seed": seed, "per_task": per_task}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "bench.json").write_bytes(orjson.dumps({"systems": {"peer": row}}))
    return folder


def test_the_peer_table_puts_each_system_beside_arcdiff_on_the_same_seeds(study, tmp_path):
    table = load_script("peer_table")
    for seed in (0, 1):
        lines = [{"step": s, "minutes": s / 10, "loss": 1.0, "examples_per_s": 60.0 + seed}
                 for s in (10, 20)]  # fmt: skip
        (study / f"seed{seed}" / "metrics.jsonl").write_bytes(
            b"\n".join(orjson.dumps(m) for m in lines)
        )
    better = [write_bench(tmp_path / f"b{s}", s, TASKS[:14]) for s in (0, 1)]
    same = [write_bench(tmp_path / f"s{s}", s, solved) for s, solved in [(1, TASKS[:4])]]
    record = table.main(["--arcdiff", str(study), "--seeds", "0,1", "--out", str(tmp_path / "t"),
                         "--system", "better=" + ",".join(map(str, better)),
                         "--system", f"same={same[0]}"])  # fmt: skip
    arcdiff, best, one = record["rows"]
    assert arcdiff["steps"]["values"] == [20, 20] and arcdiff["examples_per_s"]["mean"] == 60.5
    assert arcdiff["pass@2"]["mean"] == pytest.approx(3 / 20) and "vs_arcdiff" not in arcdiff
    assert (arcdiff["size"]["mean"], best["size"]["mean"]) == (0.9, 0.5)
    assert best["vs_arcdiff"]["diff"] == pytest.approx(14 / 20 - 3 / 20)
    assert best["vs_arcdiff"]["significant"] and best["tasks_solved"]["sd"] == 0
    assert one["seeds"] == [1] and one["vs_arcdiff"]["diff"] == 0  # seed 1 solved TASKS[:4] too
    assert not one["vs_arcdiff"]["significant"]
    assert "| better | 0,1 |" in (tmp_path / "t" / "table.md").read_text()
    with pytest.raises(SystemExit, match="bench.json: not there"):
        table.main(["--arcdiff", str(study), "--system", f"x={tmp_path / 'nowhere'}"])


def test_a_study_with_snapshots_draws_its_curve_into_its_report(study):
    seeds = load_script("seeds")
    from arcdiff.runs.evals import eval_dirname

    manifest = orjson.loads((study / "study.json").read_bytes()) | {
        "snapshots": [5, 10],
        "commit": "c0",
    }
    (study / "study.json").write_bytes(orjson.dumps(manifest))
    for seed in range(3):
        for minutes in (5, 10):
            folder = eval_dirname("aa1:eval", f"min_{minutes}")
            write_scores(study / f"seed{seed}" / "eval" / folder, TASKS[:1])
    report = seeds.show(study)
    assert report["curve"]["minutes"] == [5, 10, 15]
    assert (study / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (study / "seeds.md").read_text()
    assert md.startswith("![pass@2 and oracle")
    # the run's own evaluation, then its snapshots by minute (5 before 10), then other settings
    headings = [line for line in md.splitlines() if line.startswith("eval/")]
    assert headings == [
        "eval/aa1_eval",
        "eval/aa1_eval@min_5",
        "eval/aa1_eval@min_10",
        "eval/aa1_eval~augs16",
    ]
