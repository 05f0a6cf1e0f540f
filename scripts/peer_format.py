"""The peer benchmark's file formats (scripts/bench_peer.py), kept apart so a test can run them.

The peer is the discrete-diffusion ARC solver in TrelisResearch/arc-agi-2025,
experimental/diffusion. It reads Kaggle-style files from ``data/arc-prize-2024/`` under its
working directory and writes one JSON of results per evaluation. This module:

- writes arcdiff's training tasks in the peer's format (:func:`write_peer_data`): the
  training challenges with their test outputs as training solutions, the evaluation
  challenges with demonstrations and test inputs only; no evaluation solutions;
- writes the evaluation solutions once the peer has trained (:func:`write_eval_solutions`),
  because the peer's evaluate.py compares its own answers and refuses to run without them;
- turns the peer's results into an ARC Prize submission (:func:`peer_submission`) and scores
  any submission with arcdiff's scorer (:func:`score_submission`);
- patches the peer's training loop for a wall-clock budget and a loss log
  (:func:`patch_training`), the one change the benchmark needs.

No peer code is here: only the shapes of its files.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arcdiff.data.tasks import Grid, Task, TaskSet
from arcdiff.errors import DataError
from arcdiff.eval.score import TestPrediction, score_split
from arcdiff.eval.vote import Candidate

PEER_DATASET = "arc-prize-2024"  # a name the peer's evaluate.py maps to data/<name>/ files
TRAIN_CHALLENGES = "arc-agi_training_challenges.json"
TRAIN_SOLUTIONS = "arc-agi_training_solutions.json"
EVAL_CHALLENGES = "arc-agi_evaluation_challenges.json"
EVAL_SOLUTIONS = "arc-agi_evaluation_solutions.json"


def _grid(grid: Grid) -> list[list[int]]:
    return np.asarray(grid).tolist()


def _fits(grid: Grid, max_size: int) -> bool:
    return max(np.asarray(grid).shape) <= max_size


def _write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(payload))


def data_dir(peer_root: Path) -> Path:
    """Where the peer reads its files, relative to the working directory it runs in."""
    return peer_root / "data" / PEER_DATASET


def write_peer_data(
    peer_root: Path, train: TaskSet, evals: Sequence[Task], max_size: int
) -> dict[str, int]:
    """Write the training data in the peer's format; returns the counts written.

    Training tasks keep their demonstrations and the test pairs whose output is known and fits
    ``max_size`` (the peer drops a whole task over one larger grid; arcdiff skips the pair).
    Evaluation tasks give demonstrations and test inputs only: their outputs stay with the
    scorer until :func:`write_eval_solutions`.
    """
    challenges: dict[str, Any] = {}
    solutions: dict[str, list[list[list[int]]]] = {}
    for task in train:
        tests = [
            (i, o)
            for i, o in zip(task.test_inputs, train.solutions[task.id], strict=True)
            if o is not None and _fits(o, max_size)
        ]
        challenges[task.id] = {
            "train": [{"input": _grid(p.input), "output": _grid(p.output)} for p in task.demos],
            "test": [{"input": _grid(i)} for i, _ in tests],
        }
        solutions[task.id] = [_grid(o) for _, o in tests]
    eval_challenges = {
        task.id: {
            "train": [{"input": _grid(p.input), "output": _grid(p.output)} for p in task.demos],
            "test": [{"input": _grid(i)} for i in task.test_inputs],
        }
        for task in evals
    }
    root = data_dir(peer_root)
    _write(root / TRAIN_CHALLENGES, challenges)
    _write(root / TRAIN_SOLUTIONS, solutions)
    _write(root / EVAL_CHALLENGES, eval_challenges)
    stale = root / EVAL_SOLUTIONS
    if stale.exists():  # a previous benchmark's: the peer's training must not see it
        stale.unlink()
    return {
        "train_tasks": len(challenges),
        "train_pairs": sum(len(t["train"]) + len(t["test"]) for t in challenges.values()),
        "eval_tasks": len(eval_challenges),
        "eval_demos": sum(len(t["train"]) for t in eval_challenges.values()),
    }


def write_eval_solutions(peer_root: Path, evals: TaskSet) -> Path:
    """The evaluation test outputs for the peer's evaluate.py (which scores its own answers
    and stops without them); written only after the peer's training has ended."""
    path = data_dir(peer_root) / EVAL_SOLUTIONS
    _write(
        path,
        {
            t.id: [_grid(o) if o is not None else [[0]] for o in evals.solutions[t.id]]
            for t in evals
        },
    )
    return path


def _attempt(result: Mapping[str, Any] | None) -> list[list[int]]:
    """The grid of one peer attempt: ``predicted_grid`` (majority-vote mode) or ``predicted``
    (single sampling); an empty or missing grid becomes [[0]], which scores as wrong."""
    if not result:
        return [[0]]
    grid = result.get("predicted_grid", result.get("predicted"))
    return grid if grid else [[0]]


def peer_submission(peer_eval: Mapping[str, Any], tasks: Iterable[Task]) -> dict[str, Any]:
    """ARC Prize submission.json from the peer's results file (``results`` -> ``task_id``,
    ``test_results`` -> ``test_idx``, ``attempt_1``, ``attempt_2``). A task or test input the
    peer has no result for (its evaluation skipped it after an error) gets [[0]] attempts."""
    if "results" not in peer_eval:
        raise DataError("peer results: no 'results' list (not the output of evaluate.py)")
    by_task = {r["task_id"]: r for r in peer_eval["results"]}
    out: dict[str, Any] = {}
    for task in tasks:
        tests = {t["test_idx"]: t for t in by_task.get(task.id, {}).get("test_results", [])}
        out[task.id] = [
            {
                "attempt_1": _attempt(tests.get(i, {}).get("attempt_1")),
                "attempt_2": _attempt(tests.get(i, {}).get("attempt_2")),
            }
            for i in range(len(task.test_inputs))
        ]
    return out


def _as_grid(value: Any, where: str) -> Grid:
    grid = np.asarray(value)
    if grid.ndim != 2 or grid.size == 0 or grid.min() < 0 or grid.max() > 9:
        raise DataError(f"{where}: not a grid of colours 0-9")
    return grid.astype(np.uint8)


def score_submission(
    submission: Mapping[str, Any], tasks: Sequence[Task], solutions: Mapping[str, Any]
) -> dict[str, Any]:
    """arcdiff's scorer on a submission.json: its two attempts are the only candidates, so the
    oracle is pass@2. A task missing from the submission is a DataError naming it."""
    predictions: dict[str, list[TestPrediction]] = {}
    for task in tasks:
        if task.id not in submission:
            raise DataError(f"submission: no entry for task {task.id}")
        preds = []
        for i, entry in enumerate(submission[task.id]):
            where = f"submission: task {task.id}, test {i}"
            a1 = _as_grid(entry["attempt_1"], f"{where}, attempt_1")
            a2 = _as_grid(entry["attempt_2"], f"{where}, attempt_2")
            candidates = (Candidate(a1, 1, 0.0), Candidate(a2, 1, 0.0))
            preds.append(TestPrediction(candidates=candidates, attempt_1=a1, attempt_2=a2))
        if len(preds) != len(task.test_inputs):
            raise DataError(
                f"submission: task {task.id} has {len(preds)} test entries, "
                f"the task {len(task.test_inputs)}"
            )
        predictions[task.id] = preds
    return score_split(predictions, tasks, solutions)


# ---------------------------------------------------------------------------------------------
# the patch: a wall-clock budget and a loss log in the peer's training loop

_PATCHES = (
    (  # the benchmark's seed (the peer seeds nothing; it reseeds Python's random to 42 later)
        "    # Set up device (prioritize CUDA > MPS > CPU)\n",
        "    if 'seed' in config:\n"
        "        import random as _bench_random\n"
        "        _bench_random.seed(config['seed'])\n"
        "        np.random.seed(config['seed'])\n"
        "        torch.manual_seed(config['seed'])\n"
        "    # Set up device (prioritize CUDA > MPS > CPU)\n",
    ),
    (  # the clock starts with the first step
        "    for step_idx in progress_bar:\n        batch = next(data_iter)\n"
        "        losses = trainer.train_step(batch)\n",
        "    import time as _bench_time\n"
        "    _bench_start = _bench_time.monotonic()\n"
        "    _bench_log = open(output_dir / 'bench_loss.jsonl', 'w')\n"
        "    for step_idx in progress_bar:\n        batch = next(data_iter)\n"
        "        losses = trainer.train_step(batch)\n"
        "        _bench_s = _bench_time.monotonic() - _bench_start\n"
        "        _bench_log.write(json.dumps({'step': trainer.global_step, 's': _bench_s,"
        " 'loss': losses['total_loss'], 'grid_loss': losses['grid_loss']}) + '\\n')\n"
        "        _bench_log.flush()\n"
        "        if _bench_s >= config.get('max_seconds', float('inf')):\n"
        "            print(f'Time budget reached after {trainer.global_step} steps')\n"
        "            break\n",
    ),
)


def patch_training(source: str, name: str = "src/training.py") -> tuple[str, str]:
    """The peer's training.py with the benchmark's budget and loss log; returns (patched text,
    unified diff). Unknown code (the anchor is not there) is a DataError naming the file."""
    patched = source
    for anchor, replacement in _PATCHES:
        if patched.count(anchor) != 1:
            raise DataError(
                f"{name}: the training loop the benchmark patches is not there "
                "(another version of the peer?)"
            )
        patched = patched.replace(anchor, replacement)
    if "import json" not in patched:
        raise DataError(f"{name}: no 'import json' (another version of the peer?)")
    diff = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            patched.splitlines(keepends=True),
            f"a/{name}",
            f"b/{name}",
        )
    )
    return patched, diff
