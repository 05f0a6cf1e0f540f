"""The mdlARC benchmark's formats, data and patch on real ARC tasks, without training mdlARC.

mdlARC's submission format is pinned by tests/fixtures/mdlarc/submission.json (the shape its
evaluate.py writes: json.dump of task id -> one {"attempt_1", "attempt_2"} per test input; a
test input without a valid candidate gets [[0]] twice; 0becf7df has no entry). The patch is
checked on mdlARC's sources where the mirror of its repository is on this machine."""

import argparse
import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from arcdiff.data.tasks import load_tasks
from arcdiff.errors import DataError
from tests.conftest import load_script as load

SCRIPTS = Path(__file__).parents[1] / "scripts"
FIXTURE = Path(__file__).parent / "fixtures" / "mdlarc" / "submission.json"
MIRROR = Path("/work/.mirror/mvakde+mdlARC/repo")  # a bare clone of mvakde/mdlARC


mf, mp, ms, pf = (
    load("mdlarc_format"),
    load("mdlarc_patch"),
    load("mdlarc_setup"),
    load("peer_format"),
)


@pytest.fixture(scope="module")
def evals():
    return load_tasks("aa1:eval", max_size=10, ids=["00576224", "31d5ba1a", "0becf7df"])


def score(submission, evals):
    converted = mf.mdlarc_submission(submission, evals.tasks)
    return pf.score_submission(converted, evals.tasks, evals.solutions)


def test_mdlarcs_submission_becomes_arcdiffs_with_every_test_input(evals):
    sub = mf.mdlarc_submission(orjson.loads(FIXTURE.read_bytes()), evals.tasks)
    assert list(sub) == evals.ids
    assert sub["00576224"] == [{"attempt_1": [[2, 3], [8, 7]], "attempt_2": [[2, 3], [8, 7]]}]
    assert sub["31d5ba1a"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}
    assert sub["0becf7df"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]  # no entry: wrong


def test_arcdiffs_scorer_gives_a_planted_answer_exactly_its_credit(evals):
    mdlarc = orjson.loads(FIXTURE.read_bytes())
    wrong = score(mdlarc, evals)["summary"]
    assert wrong["pass@2"] == 0.0 and wrong["tasks_solved"] == 0
    mdlarc["31d5ba1a"][1]["attempt_2"] = evals.solutions["31d5ba1a"][1].tolist()
    scores = score(mdlarc, evals)
    assert scores["per_task"]["31d5ba1a"]["pass2"] == 0.5  # one of its two test inputs
    assert scores["per_task"]["31d5ba1a"]["pass1"] == 0.0
    assert scores["summary"]["pass@2"] == pytest.approx(0.5 / 3)
    assert scores["summary"]["tasks_solved"] == 0
    mdlarc["00576224"][0]["attempt_1"] = evals.solutions["00576224"][0].tolist()
    scores = score(mdlarc, evals)
    assert scores["per_task"]["00576224"]["pass1"] == 1.0
    assert scores["summary"]["tasks_solved"] == 1
    assert scores["summary"]["pass@2"] == pytest.approx(1.5 / 3)


def test_a_submission_that_cannot_be_scored_is_one_error_naming_the_task(evals):
    mdlarc = orjson.loads(FIXTURE.read_bytes())
    del mdlarc["31d5ba1a"][0]  # which test input the other entry is for is unknown
    with pytest.raises(DataError, match="task 31d5ba1a has 1 entries, the task 2 test inputs"):
        mf.mdlarc_submission(mdlarc, evals.tasks)
    mdlarc = orjson.loads(FIXTURE.read_bytes())
    mdlarc["00576224"][0]["attempt_2"] = [[10]]
    with pytest.raises(DataError, match="task 00576224, test 0, attempt_2"):
        score(mdlarc, evals)


def test_mdlarc_reads_no_evaluation_output_before_it_is_scored(tmp_path, evals):
    """Plant a sentinel as every evaluation test output: no file written for mdlARC before its
    training holds it; its challenges hold the evaluation test inputs and demonstrations, and
    the training tasks with their test pairs moved into "train", as its build script does."""
    sentinel = np.full((7, 3), 9, dtype=np.uint8)
    sentinel[0] = [1, 2, 3]
    planted = dataclasses.replace(
        evals, solutions={t.id: (sentinel,) * len(t.test_inputs) for t in evals}
    )
    train = load_tasks("aa1:train", max_size=10, limit=12)
    (tmp_path / mf.SOLUTIONS).parent.mkdir(parents=True)
    (tmp_path / mf.SOLUTIONS).write_bytes(orjson.dumps({"x": [sentinel.tolist()]}))  # stale
    counts = mf.write_mdlarc_data(tmp_path, train, planted.tasks, max_size=10)
    ms.write_driver(tmp_path)
    ms.mdlarc_args(tmp_path, "bench", epochs=3, seconds=60, seed=0)
    needle = orjson.dumps(sentinel.tolist())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in written) == [
        "bench_bench_args.json",
        "bench_run.py",
        "challenges.json",
    ]
    assert all(needle not in p.read_bytes() for p in written)
    challenges = orjson.loads((tmp_path / mf.CHALLENGES).read_bytes())
    assert list(challenges) == [*train.ids, *planted.ids]
    for task in planted:
        tests = challenges[task.id]["test"]
        assert tests == [{"input": i.tolist()} for i in task.test_inputs]
        assert len(challenges[task.id]["train"]) == len(task.demos)
    for task in train:
        assert set(challenges[task.id]) == {"train"}
        pairs = challenges[task.id]["train"]
        assert pairs[: len(task.demos)] == [
            {"input": p.input.tolist(), "output": p.output.tolist()} for p in task.demos
        ]
        fit = [o.tolist() for o in train.solutions[task.id] if o is not None and max(o.shape) <= 10]
        assert [p["output"] for p in pairs[len(task.demos) :]] == fit
    assert counts["train_sequences"] == sum(len(t["train"]) for t in challenges.values())
    assert counts["eval_test_inputs"] == 4


def test_the_arguments_are_the_low_recipe_at_the_smallest_shape(tmp_path):
    path = ms.mdlarc_args(tmp_path, "bench", epochs=7, seconds=900, seed=3, eval_augments=8)
    args = orjson.loads(path.read_bytes())
    assert (args["d_model"], args["n_layers"], args["n_heads"], args["d_ff"]) == (128, 4, 4, 512)
    assert (args["batch_size"], args["normuon_lr"], args["adamw_lr"]) == (32, 1.66e-3, 3e-4)
    assert (args["warmup_pct"], args["wsd_decay_start_pct"]) == (0.02, 0.8)
    assert (args["epochs"], args["seed"], args["max_seconds"]) == (7, 3, 900)
    assert (args["max_augments"], args["eval_augments"]) == (80, 8)  # training keeps its 80


ANCHORED = {name: "\n# (mdlARC code)\n".join(a for a, _ in mp.PATCHES[name]) for name in mp.PATCHES}


def test_the_patch_changes_each_anchor_or_names_the_file():
    for name, source in ANCHORED.items():
        patched, diff = mp.patch_file(name, source)
        assert diff.startswith(f"--- a/{name}\n+++ b/{name}")
        assert all(replacement in patched for _, replacement in mp.PATCHES[name])
    broken = ANCHORED["src/train.py"].replace("def train_one_epoch(", "def train_epoch(")
    with pytest.raises(DataError, match=r"^src/train.py: the code .* 0 times, not once"):
        mp.patch_file("src/train.py", broken)
    with pytest.raises(DataError, match=r"src/utils.py: not a file the benchmark patches"):
        mp.patch_file("src/utils.py", "")


def test_a_checkout_without_mdlarc_is_one_error_and_writes_nothing(tmp_path):
    (tmp_path / "checkout" / "src").mkdir(parents=True)
    (tmp_path / "checkout" / "src" / "build.py").write_text("")
    with pytest.raises(DataError, match="checkout: no src/common.py .--mdlarc-dir"):
        mp.copy_mdlarc(tmp_path / "checkout", tmp_path / "out")
    for name, source in ANCHORED.items():
        (tmp_path / "checkout" / name).write_text(source)
    (tmp_path / "checkout" / "src" / "evaluate.py").write_text("# another version\n")
    with pytest.raises(DataError, match="src/evaluate.py: the code the benchmark patches"):
        mp.copy_mdlarc(tmp_path / "checkout", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def patched_mdlarc(tmp_path_factory):
    """mdlARC's sources from the mirror, copied and patched; its modules imported."""
    if not MIRROR.exists():
        pytest.skip(f"no mirror of mdlARC at {MIRROR}")
    checkout = tmp_path_factory.mktemp("mdlarc")
    subprocess.run(["git", "clone", "-q", str(MIRROR), str(checkout / "src_repo")], check=True)
    root = checkout / "copy"
    diff = mp.copy_mdlarc(checkout / "src_repo", root)
    names = ("common", "tinytransformer", "train")
    sys.path.insert(0, str(root / "src"))
    try:
        modules = {n: importlib.import_module(n) for n in names}
    finally:
        sys.path.remove(str(root / "src"))
    yield diff, modules
    for n in names:
        sys.modules.pop(n, None)


def test_the_patch_applies_to_mdlarcs_sources(patched_mdlarc):
    diff, modules = patched_mdlarc
    for name in mp.PATCHES:
        assert f"--- a/{name}\n" in diff
    assert modules["common"].resolve_device("cuda").type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    assert modules["train"]._normuon_supported(torch.device("cpu")) == (True, "")


def test_packed_attention_without_flash_attn_matches_its_padded_path(patched_mdlarc):
    """The varlen forward (SDPA per packed sequence) gives the logits of the padded forward
    (SDPA with a causal mask) on each sequence alone."""
    tt = patched_mdlarc[1]["tinytransformer"]
    common = patched_mdlarc[1]["common"]
    torch.manual_seed(0)
    config = tt.TinyTransformerConfig(
        num_examples=2, d_model=32, n_heads=4, d_ff=64, n_layers=2, dropout=0.0
    )
    model = tt.TinyTransformer(config).eval()
    seqs = [common.encode_example([[1, 2], [3, 4]], [[5]]), common.encode_example([[7]], [[8]])]
    tokens = [torch.tensor(s) for s in seqs]
    positions = [common.compute_positions_3d(t[None])[0] for t in tokens]
    lengths = torch.tensor([0, *(len(s) for s in seqs)])
    packed = model(
        torch.cat(tokens),
        torch.tensor([0, 1]),
        torch.tensor([0, 3]),
        positions_3d=torch.cat(positions),
        cu_seqlens=lengths.cumsum(0).to(torch.int32),
        max_seqlen=max(len(s) for s in seqs),
    )["logits"]
    alone = [
        model(t[None], torch.tensor([i]), torch.tensor([3 * i]), positions_3d=p[None])["logits"][0]
        for i, (t, p) in enumerate(zip(tokens, positions, strict=True))
    ]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_the_budget_stops_training_and_logs_every_step(patched_mdlarc, tmp_path):
    train = patched_mdlarc[1]["train"]
    log = tmp_path / "loss.jsonl"
    train._bench_start(argparse.Namespace(max_seconds=3600, bench_log=str(log)))
    assert train._bench_step(torch.tensor(2.5)) is False
    assert train._bench_step(torch.tensor(1.5)) is False
    train._BENCH["max_seconds"] = 0.0  # the budget is spent
    assert train._bench_step(torch.tensor(1.0)) is True and train._bench_over()
    train._BENCH["log"].close()
    rows = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 2.5), (2, 1.5), (3, 1.0)]
    assert rows[0]["s"] <= rows[1]["s"] <= rows[2]["s"]
    train._BENCH.clear()
