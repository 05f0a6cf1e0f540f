"""The training stream: determinism, real augmented pairs, no eval leakage, mixing, DDP."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json

import numpy as np
import pytest
import torch

from arcdiff.config import DataConfig
from arcdiff.data.augment import Augmentation
from arcdiff.data.dataset import Batch, TrainingStream, stream_from_config
from arcdiff.data.encode import PAD, canvas_size, decode_grids
from arcdiff.data.tasks import Grid, TaskSet, load_tasks
from arcdiff.errors import DataError

# every aa1:train task within 12x12 also has its test outputs within 12x12
SMALL = 12

GridKey = tuple[tuple[int, ...], bytes]


def key(grid: Grid) -> GridKey:
    return grid.shape, np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def undo_augmentations(batch: Batch) -> list[tuple[int, Grid, Grid]]:
    """(task index, input, output) of every example, its augmentation inverted."""
    inputs = decode_grids(batch.inputs.numpy(), batch.input_sizes.numpy())
    outputs = decode_grids(batch.outputs.numpy(), batch.output_sizes.numpy())
    examples = []
    for b in range(len(batch)):
        undo = Augmentation(int(batch.dihedral[b]), batch.colours[b].numpy()).inverse()
        examples.append((int(batch.task[b]), undo.apply(inputs[b]), undo.apply(outputs[b])))
    return examples


def assert_same_batch(a: Batch, b: Batch) -> None:
    for f in dataclasses.fields(Batch):
        assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name


def pool_grids(train: TaskSet, eval_set: TaskSet) -> set[GridKey]:
    """Every grid the stream may legitimately show: train solved pairs and eval demos."""
    pairs = [p for t in train for p in train.solved_pairs(t)]
    pairs += [p for t in eval_set for p in t.demos]
    return {key(g) for p in pairs for g in (p.input, p.output)}


@pytest.fixture(scope="module")
def train() -> TaskSet:
    return load_tasks("aa1:train", max_size=SMALL)


@pytest.fixture(scope="module")
def evals() -> TaskSet:
    return load_tasks("aa1:eval", max_size=SMALL)


@pytest.fixture(scope="module")
def allowed(train, evals) -> list[set[tuple[GridKey, GridKey]]]:
    """Per task index (train tasks, then eval tasks): the (input, output) pairs it may give."""
    per_task = [train.solved_pairs(t) for t in train] + [t.demos for t in evals]
    return [{(key(p.input), key(p.output)) for p in pairs} for pairs in per_task]


def make_stream(train: TaskSet, evals: TaskSet, **kwargs) -> TrainingStream:
    return TrainingStream(train, evals.tasks, max_size=SMALL, **kwargs)


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_batches_other_seed_other_batches(train, evals):
    a, b, c = (make_stream(train, evals, seed=s) for s in (3, 3, 4))
    for _ in range(3):
        batch_a, batch_b, batch_c = a.sample(64), b.sample(64), c.sample(64)
        assert_same_batch(batch_a, batch_b)
        assert not torch.equal(batch_a.task, batch_c.task)
        assert not torch.equal(batch_a.colours, batch_c.colours)


def test_state_dict_resumes_exactly(train, evals):
    stream = make_stream(train, evals, seed=3)
    for _ in range(3):
        stream.sample(32)
    state = stream.state_dict()
    expected = [stream.sample(32) for _ in range(3)]

    buffer = io.BytesIO()  # as it would travel in a checkpoint
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = make_stream(train, evals, seed=99)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in expected:
        assert_same_batch(resumed.sample(32), batch)


# ---------------------------------------------------------------------------------------------
# every example is a real pair, augmented


@pytest.mark.parametrize("permute_background", [False, True])
def test_every_example_is_an_augmented_allowed_pair(train, evals, allowed, permute_background):
    stream = make_stream(train, evals, seed=1, permute_background=permute_background)
    batch = stream.sample(1024)
    n_train = len(train)

    assert batch.inputs.shape == (1024, SMALL, SMALL) and batch.inputs.dtype == torch.int64
    assert (canvas_size(batch.inputs.numpy()) == batch.input_sizes.numpy()).all()
    assert (canvas_size(batch.outputs.numpy()) == batch.output_sizes.numpy()).all()
    assert torch.equal(batch.from_eval, batch.task >= n_train)
    colours = batch.colours.numpy()
    assert (np.sort(colours, axis=1) == np.arange(10)).all()
    if permute_background:
        assert (colours[:, 0] != 0).any()
    else:
        assert (colours[:, 0] == 0).all()

    test_pairs = {
        (key(i), key(o))
        for t in train
        for i, o in zip(t.test_inputs, train.solutions[t.id], strict=True)
    }
    from_tests = 0
    for task, inp, out in undo_augmentations(batch):
        assert (key(inp), key(out)) in allowed[task], f"task {stream.task_ids[task]}"
        if task < n_train and (key(inp), key(out)) in test_pairs:
            from_tests += 1
    assert from_tests > 0  # train-split tasks contribute their solved test pairs too


# ---------------------------------------------------------------------------------------------
# no leakage of eval-split test outputs


def test_no_eval_test_output_in_the_stream():
    train = load_tasks("aa1:train")
    eval_set = load_tasks("aa1:eval")
    stream = TrainingStream(train, eval_set.tasks, max_size=30, eval_weight=0.5, seed=0)

    test_outputs = {key(g) for outs in eval_set.solutions.values() for g in outs if g is not None}
    coincidental = test_outputs & pool_grids(train, eval_set)
    assert len(test_outputs) > 400
    assert len(coincidental) <= 20, "more eval test outputs equal a training grid than expected"
    forbidden = test_outputs - coincidental

    seen: set[GridKey] = set()
    eval_pairs_seen: set[tuple[int, GridKey, GridKey]] = set()
    for _ in range(24):
        for task, inp, out in undo_augmentations(stream.sample(1024)):
            seen |= {key(inp), key(out)}
            if task >= len(train):
                eval_pairs_seen.add((task, key(inp), key(out)))
    assert not seen & forbidden
    num_eval_demos = sum(len(t.demos) for t in eval_set)
    assert len(eval_pairs_seen) > 0.9 * num_eval_demos  # the draw did cover the eval demos


def sentinel(i: int) -> list[list[int]]:
    """A grid no ARC task holds: an odd size and a diagonal stripe of all 10 colours."""
    h, w = 19 + i, 23
    return ((np.add.outer(3 * np.arange(h), 7 * np.arange(w)) + i) % 10).tolist()


@pytest.mark.parametrize("self_supervised", [0.0, 0.5])
def test_sentinel_test_outputs_never_reach_the_stream(tmp_path, self_supervised):
    source = load_tasks("aa1:eval", max_size=SMALL)
    sentinels: set[GridKey] = set()
    for task in source.tasks[:6]:
        tests = []
        for test_input in task.test_inputs:
            grid = sentinel(len(sentinels))
            sentinels.add(key(np.array(grid, dtype=np.uint8)))
            tests.append({"input": test_input.tolist(), "output": grid})
        demos = [{"input": p.input.tolist(), "output": p.output.tolist()} for p in task.demos]
        (tmp_path / f"{task.id}.json").write_text(json.dumps({"train": demos, "test": tests}))
    planted = load_tasks(str(tmp_path))
    assert {key(g) for outs in planted.solutions.values() for g in outs} == sentinels
    assert not sentinels & pool_grids(load_tasks("aa1:train"), source)

    cfg = DataConfig(
        eval_sources=[str(tmp_path)], eval_weight=0.8, seed=2, self_supervised=self_supervised
    )
    stream = stream_from_config(cfg)
    assert stream.num_tasks == 400 + 6
    seen: set[GridKey] = set()
    alone: set[GridKey] = set()  # grids denoised with an empty input slot
    for _ in range(8):
        for _, inp, out in undo_augmentations(stream.sample(1024)):
            seen |= {key(inp), key(out)}
            if inp.size == 0:
                alone.add(key(out))
    assert not seen & sentinels
    planted_test_inputs = {key(g) for t in planted for g in t.test_inputs}
    # self-supervised examples do learn the planted tasks' test inputs (the check can fail)
    assert bool(alone & planted_test_inputs) == (self_supervised > 0)

    # the same tasks as a train-split source do give their test outputs: the check can fail
    as_train = TrainingStream(planted, max_size=30, seed=2)
    seen = {key(out) for _, _, out in undo_augmentations(as_train.sample(256))}
    assert seen & sentinels


def test_self_supervised_examples_are_input_grids_of_their_task_alone(train, evals):
    stream = make_stream(train, evals, seed=5, self_supervised=0.3)
    batch = stream.sample(2048)
    empty = (batch.input_sizes == 0).all(1)
    assert 0.26 < empty.float().mean().item() < 0.34
    assert (batch.inputs[empty] == PAD).all()  # the role flag: an all-PAD input canvas
    assert torch.equal(batch.from_eval, batch.task >= len(train))
    tasks = [*train, *evals]
    inputs_of = [{key(g) for g in (*(p.input for p in t.demos), *t.test_inputs)} for t in tasks]
    outputs_of = [{key(p.output) for p in t.demos} for t in tasks]
    examples = undo_augmentations(batch)
    for b in torch.nonzero(empty).flatten().tolist():
        task, inp, out = examples[b]
        assert inp.shape == (0, 0) and key(out) in inputs_of[task]
    test_inputs_seen = [
        examples[b][2]
        for b in torch.nonzero(empty).flatten().tolist()
        if key(examples[b][2]) not in outputs_of[examples[b][0]]
        and any(key(examples[b][2]) == key(g) for g in tasks[examples[b][0]].test_inputs)
    ]
    assert test_inputs_seen  # test inputs, given at test time, are among them


def test_self_supervised_stream_resumes_exactly(train, evals):
    stream = make_stream(train, evals, seed=6, self_supervised=0.5, bucket_window=4)
    stream.sample(16)
    state = stream.state_dict()
    expected = [stream.sample(16) for _ in range(6)]
    resumed = make_stream(train, evals, seed=99, self_supervised=0.5, bucket_window=4)
    resumed.load_state_dict(state)
    for batch in expected:
        assert_same_batch(resumed.sample(16), batch)


# ---------------------------------------------------------------------------------------------
# mixing train and eval tasks


def test_held_out_validation_pairs_never_reach_the_stream():
    cfg = DataConfig(train_sources=["aa1:train"], eval_sources=[], max_size=SMALL, val_pairs=40)
    cfg = dataclasses.replace(cfg, augment=False)  # examples are the pairs themselves
    stream = stream_from_config(cfg)
    val = stream.validation_batch()
    pair_key = lambda i, o: (key(i), key(o))  # noqa: E731
    held = {
        pair_key(i, o)
        for i, o in zip(
            decode_grids(val.inputs.numpy(), val.input_sizes.numpy()),
            decode_grids(val.outputs.numpy(), val.output_sizes.numpy()),
            strict=True,
        )
    }
    assert len(held) == 40
    held_tasks = set(val.task.tolist())
    seen, seen_tasks = set(), set()
    for _ in range(40):
        for task, i, o in undo_augmentations(stream.sample(256)):
            seen.add(pair_key(i, o))
            seen_tasks.add(task)
    assert held_tasks <= seen_tasks  # their tasks' other demonstrations are shown
    assert not held & seen


@pytest.mark.parametrize("eval_weight", [0.0, 0.3, 1.0])
def test_share_of_eval_examples_is_eval_weight(train, evals, eval_weight):
    stream = make_stream(train, evals, eval_weight=eval_weight, seed=5)
    from_eval = torch.cat([stream.sample(4096).from_eval for _ in range(4)]).numpy()
    tolerance = 5 * np.sqrt(eval_weight * (1 - eval_weight) / len(from_eval))  # 5 sigma
    assert abs(from_eval.mean() - eval_weight) <= tolerance


def test_without_eval_tasks_everything_is_train(train):
    stream = TrainingStream(train, max_size=SMALL, eval_weight=0.7)
    batch = stream.sample(2048)
    assert not batch.from_eval.any()
    assert int(batch.task.max()) < len(train)


def test_without_train_tasks_everything_is_eval(evals):
    stream = TrainingStream(TaskSet("", (), {}), evals.tasks, max_size=SMALL, eval_weight=0.2)
    batch = stream.sample(2048)
    assert batch.from_eval.all()
    assert int(batch.task.max()) < len(evals)
    assert stream.task_ids == evals.ids


def test_task_indices_are_train_tasks_then_eval_tasks(train, evals):
    stream = make_stream(train, evals)
    assert stream.task_ids == train.ids + evals.ids
    assert stream.num_train_tasks == len(train)
    assert stream.num_pairs == sum(len(train.solved_pairs(t)) for t in train) + sum(
        len(t.demos) for t in evals
    )


def test_tasks_are_drawn_uniformly_within_each_split(train, evals):
    stream = make_stream(train, evals, eval_weight=0.3, seed=6)
    batches = [stream.sample(16384) for _ in range(4)]
    task = torch.cat([b.task for b in batches]).numpy()
    counts = np.bincount(task, minlength=stream.num_tasks)
    n = len(task)
    # pairs per task range from 3 to 12: drawing pairs uniformly would give a 12-pair task
    # about 2.8 times the mean count, far outside 6 sigma
    for split, weight in ((slice(0, len(train)), 0.7), (slice(len(train), None), 0.3)):
        c = counts[split]
        mean = n * weight / len(c)
        sigma = np.sqrt(mean)
        assert np.abs(c - mean).max() < 6 * sigma, (c.min(), c.max(), mean)


# ---------------------------------------------------------------------------------------------
# DDP sharding


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_one_global_batch(train, evals, world_size):
    batch_size = 64
    single = make_stream(train, evals, seed=7)
    ranks = [
        make_stream(train, evals, seed=7, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for _ in range(3):
        whole = single.sample(batch_size * world_size)
        parts = [stream.sample(batch_size) for stream in ranks]
        for f in dataclasses.fields(Batch):
            interleaved = torch.stack([getattr(p, f.name) for p in parts], dim=1)
            assert torch.equal(interleaved.flatten(0, 1), getattr(whole, f.name)), f.name
        examples = [
            {
                (int(t), int(d), c.numpy().tobytes(), x.numpy().tobytes())
                for t, d, c, x in zip(p.task, p.dihedral, p.colours, p.inputs, strict=True)
            }
            for p in parts
        ]
        assert len(set().union(*examples)) == batch_size * world_size  # pairwise disjoint


def test_rank_outside_world_size_is_rejected(train):
    with pytest.raises(ValueError, match="rank"):
        TrainingStream(train, max_size=SMALL, rank=2, world_size=2)


# ---------------------------------------------------------------------------------------------
# source errors


def test_task_in_both_train_and_eval_sources_is_a_data_error(train):
    with pytest.raises(DataError, match=train.ids[3]):
        TrainingStream(train, [train.tasks[3]], max_size=SMALL)
    with pytest.raises(DataError, match="both the train and the eval"):
        stream_from_config(DataConfig(train_sources=["aa1:train"], eval_sources=["aa1:train"]))


def test_no_tasks_at_all_is_a_data_error():
    with pytest.raises(DataError, match="no training tasks"):
        TrainingStream(TaskSet("", (), {}), ())


def test_solved_test_outputs_larger_than_the_canvas_are_left_out():
    # aa1:train 10fcaaa3 fits 10x10 in its demonstrations and test input, not its 12x10 output
    train = load_tasks("aa1:train", max_size=10)
    assert "10fcaaa3" in train.ids
    stream = TrainingStream(train, max_size=10, seed=0)
    assert stream.num_pairs == sum(len(train.solved_pairs(t)) for t in train) - 1
    batch = stream.sample(2048)
    assert int(batch.output_sizes.max()) <= 10
    assert train.ids.index("10fcaaa3") in batch.task.tolist()  # its demonstrations stay
    assert stream_from_config(DataConfig(max_size=10)).max_size == 10


def test_ids_select_tasks_across_train_and_eval_sources(train, evals):
    stream = stream_from_config(DataConfig(ids=[train.ids[0], evals.ids[0]]))
    assert stream.task_ids == [train.ids[0], evals.ids[0]]
    assert set(stream.sample(64).task.tolist()) == {0, 1}
    with pytest.raises(DataError, match="data.ids: no task with id nope"):
        stream_from_config(DataConfig(ids=[train.ids[0], "nope"]))


# ---------------------------------------------------------------------------------------------
# size buckets


def grid_sides(batch: Batch) -> np.ndarray:
    return torch.maximum(batch.input_sizes.max(1).values, batch.output_sizes.max(1).values).numpy()


def test_size_buckets_crop_each_batch_to_its_largest_grid(train, evals, allowed):
    stream = make_stream(train, evals, seed=2, bucket_window=8)
    batches = [stream.sample(64) for _ in range(8)]  # one whole window
    ranges = []
    for batch in batches:
        sides = grid_sides(batch)
        assert batch.inputs.shape == batch.outputs.shape == (64, sides.max(), sides.max())
        assert (canvas_size(batch.inputs.numpy()) == batch.input_sizes.numpy()).all()
        assert (canvas_size(batch.outputs.numpy()) == batch.output_sizes.numpy()).all()
        for task, inp, out in undo_augmentations(batch):
            assert (key(inp), key(out)) in allowed[task]
        ranges.append((sides.min(), sides.max()))
    ranges.sort()
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in itertools.pairwise(ranges))  # sorted
    assert ranges[0][1] < SMALL  # small grids stopped paying for the full canvas
    served = [grid_sides(b).max() for b in batches]
    assert served != sorted(served)  # buckets come in a random order


def test_size_buckets_resume_exactly_inside_and_across_windows(train, evals):
    stream = make_stream(train, evals, seed=3, bucket_window=4)
    for _ in range(6):  # one window and half of the next
        stream.sample(32)
    state = stream.state_dict()
    expected = [stream.sample(32) for _ in range(5)]  # crosses into a third window

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = make_stream(train, evals, seed=99, bucket_window=4)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in expected:
        assert_same_batch(resumed.sample(32), batch)


def test_size_buckets_split_one_global_batch_across_ranks(train, evals):
    single = make_stream(train, evals, seed=7, bucket_window=4)
    ranks = [
        make_stream(train, evals, seed=7, rank=r, world_size=2, bucket_window=4) for r in (0, 1)
    ]
    for _ in range(5):
        whole = single.sample(64)
        parts = [stream.sample(32) for stream in ranks]
        for f in dataclasses.fields(Batch):
            interleaved = torch.stack([getattr(p, f.name) for p in parts], dim=1)
            assert torch.equal(interleaved.flatten(0, 1), getattr(whole, f.name)), f.name
