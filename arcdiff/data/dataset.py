"""The stream of augmented, encoded training examples.

Train-split tasks contribute all their pairs (demonstrations and solved tests); eval-split
tasks contribute their demonstration pairs ONLY: the stream is handed :class:`Task` objects,
which carry no test outputs, so none can leak into training. ``eval_weight`` is the share of
examples drawn from eval-split demonstrations. Each example picks a task uniformly within its
split, then one of its pairs uniformly, then a fresh random augmentation; it carries the task
index (train tasks first, then eval tasks) and the augmentation.

Under DDP every rank draws the same global batch from the same generator and keeps its own
interleaved slice, so ``world_size`` ranks of batch B see exactly the examples one process of
batch ``B * world_size`` would.

Size buckets (``bucket_window`` W > 1): W global batches are drawn at once, sorted by their
largest grid side, cut into W batches and served in a random order; each batch's canvases are
cropped to its largest grid. The examples and their distribution are unchanged; only their
grouping into batches and the canvas side differ.

Self-supervised grids (``self_supervised`` p > 0): a share p of the examples asks the model
to denoise one grid alone, its input slot an empty (all-PAD) canvas, under the grid's task
embedding. The grids are every input grid of every task in the stream: demonstration inputs
and test INPUTS (given at test time), never an output that is not already a training target
and never a test output. A task is drawn uniformly, then one of its input grids. With p = 0
nothing extra is drawn, so the stream is the same as without the option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from arcdiff.config import DataConfig
from arcdiff.data.augment import augment_canvases, sample_augmentations
from arcdiff.data.encode import encode_grids
from arcdiff.data.holdout import excluded_ids
from arcdiff.data.tasks import Pair, Task, TaskSet, load_tasks
from arcdiff.errors import DataError


@dataclass(frozen=True)
class Batch:
    """One batch of training examples on (B, S, S) PAD canvases."""

    inputs: torch.Tensor  # (B, S, S) int64, augmented input grids
    outputs: torch.Tensor  # (B, S, S) int64, augmented output grids
    input_sizes: torch.Tensor  # (B, 2) int64 (h, w)
    output_sizes: torch.Tensor  # (B, 2) int64 (h, w)
    task: torch.Tensor  # (B,) int64 task index
    dihedral: torch.Tensor  # (B,) int64 dihedral id 0..7
    colours: torch.Tensor  # (B, 10) int64 colour permutation
    from_eval: torch.Tensor  # (B,) bool, drawn from an eval-split task's demonstrations

    def __len__(self) -> int:
        return self.inputs.shape[0]


class _Pool:
    """Encoded pairs of a group of tasks, for vectorised task-then-pair sampling."""

    def __init__(self, pairs_per_task: Sequence[Sequence[Pair]], first_task_index: int):
        counts = np.array([len(p) for p in pairs_per_task], dtype=np.int64)
        if (counts == 0).any():
            raise DataError("a training task has no pairs with known outputs")
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat = [pair for pairs in pairs_per_task for pair in pairs]
        self.pair_task = np.repeat(np.arange(len(counts)) + first_task_index, counts)
        self.flat = flat

    @property
    def num_tasks(self) -> int:
        return len(self.counts)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n,) pair indices within this pool: a uniform task, then a uniform pair of it."""
        if self.num_tasks == 0:
            return np.zeros(n, dtype=np.int64)
        task = rng.integers(0, self.num_tasks, size=n)
        return self.offsets[task] + (rng.random(n) * self.counts[task]).astype(np.int64)


class TrainingStream:
    """Infinite, deterministic stream of augmented training batches for one DDP rank."""

    def __init__(
        self,
        train: TaskSet,
        eval_tasks: Sequence[Task] = (),
        *,
        max_size: int = 30,
        eval_weight: float = 0.5,
        augment: bool = True,
        permute_background: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        validation: Sequence[tuple[str, Pair]] = (),
        bucket_window: int = 0,
        self_supervised: float = 0.0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if len(train) == 0 and len(eval_tasks) == 0:
            raise DataError("no training tasks: the train and eval sources selected nothing")
        self.task_ids = [t.id for t in train] + [t.id for t in eval_tasks]
        both = sorted(set(train.ids) & {t.id for t in eval_tasks})
        if both:
            raise DataError(f"task {both[0]} is in both the train and the eval sources")
        self.num_train_tasks = len(train)
        self.max_size = max_size
        self.eval_weight = eval_weight if len(train) else 1.0
        if not len(eval_tasks):
            self.eval_weight = 0.0
        self.augment = augment
        self.permute_background = permute_background
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)
        self.bucket_window = bucket_window
        self._window: list[Any] = []  # draws of the current bucket window, served in order
        self._window_rng: dict[str, Any] | None = None  # generator state before the window
        self._window_pos = 0

        # a train-split task's solved test pair may not fit the canvas; demonstrations do
        fits = [
            [p for p in train.solved_pairs(t) if max(p.output.shape) <= max_size] for t in train
        ]
        self.train_pool = _Pool(fits, 0)
        self.eval_pool = _Pool([t.demos for t in eval_tasks], len(train))
        self.self_supervised = self_supervised
        alone = [_alone(t) for t in (*train, *eval_tasks)] if self_supervised > 0 else []
        self.alone_pool = _Pool(alone, 0)  # tasks in task-index order: train, then eval
        self.alone_offset = len(self.train_pool.flat) + len(self.eval_pool.flat)
        pairs = self.train_pool.flat + self.eval_pool.flat + self.alone_pool.flat
        self.inputs, self.input_sizes = encode_grids([p.input for p in pairs], max_size)
        self.outputs, self.output_sizes = encode_grids([p.output for p in pairs], max_size)
        self.pair_task = np.concatenate(
            [self.train_pool.pair_task, self.eval_pool.pair_task, self.alone_pool.pair_task]
        ).astype(np.int64)
        index = {task_id: i for i, task_id in enumerate(self.task_ids)}
        self.validation = [(index[task_id], pair) for task_id, pair in validation]

    @property
    def num_tasks(self) -> int:
        return len(self.task_ids)

    @property
    def num_pairs(self) -> int:
        """Input-output pairs (the self-supervised grids are counted by ``num_alone``)."""
        return self.alone_offset

    @property
    def num_alone(self) -> int:
        return len(self.alone_pool.flat)

    def _draw(self, n: int) -> tuple[np.ndarray, ...]:
        """n global examples: pair indices, dihedral ids, colour permutations, from_eval."""
        from_eval = self.rng.random(n) < self.eval_weight
        from_train = self.train_pool.draw(self.rng, n)
        from_evals = self.eval_pool.draw(self.rng, n) + len(self.train_pool.flat)
        pair = np.where(from_eval, from_evals, from_train)
        if self.self_supervised > 0:
            alone = self.rng.random(n) < self.self_supervised
            grids = self.alone_pool.draw(self.rng, n) + self.alone_offset
            pair = np.where(alone, grids, pair)
            from_eval = np.where(alone, self.pair_task[grids] >= self.num_train_tasks, from_eval)
        if self.augment:
            dihedrals, colours = sample_augmentations(
                self.rng, n, permute_background=self.permute_background
            )
        else:
            dihedrals, colours = (
                np.zeros(n, np.int64),
                np.tile(np.arange(10, dtype=np.uint8), (n, 1)),
            )
        return pair, dihedrals, colours, from_eval

    def _side(self, pair: np.ndarray) -> np.ndarray:
        """(n,) largest side of each example's input and output grid."""
        return np.maximum(self.input_sizes[pair].max(1), self.output_sizes[pair].max(1))

    def _fill_window(self, n: int) -> None:
        """Draw ``bucket_window`` global batches at once and cut them into size buckets."""
        self._window_rng = self.rng.bit_generator.state
        drawn = self._draw(n * self.bucket_window)
        order = np.argsort(self._side(drawn[0]), kind="stable")
        chunks = [order[i * n : (i + 1) * n] for i in range(self.bucket_window)]
        self._window = [tuple(a[c] for a in drawn) for c in self.rng.permutation(chunks)]
        self._window_pos = 0

    def sample(self, batch_size: int) -> Batch:
        """This rank's ``batch_size`` examples of the next global batch."""
        n = batch_size * self.world_size
        if self.bucket_window > 1:
            if self._window_pos >= len(self._window) or len(self._window[0][0]) != n:
                self._fill_window(n)
            pair, dihedrals, colours, from_eval = self._window[self._window_pos]
            self._window_pos += 1
            side = int(self._side(pair).max())
        else:
            pair, dihedrals, colours, from_eval = self._draw(n)
            side = self.max_size
        mine = slice(self.rank, None, self.world_size)
        pair, dihedrals, colours, from_eval = (
            pair[mine],
            dihedrals[mine],
            colours[mine],
            from_eval[mine],
        )
        inputs, input_sizes = augment_canvases(
            self.inputs[pair][:, :side, :side], self.input_sizes[pair], dihedrals, colours
        )
        outputs, output_sizes = augment_canvases(
            self.outputs[pair][:, :side, :side], self.output_sizes[pair], dihedrals, colours
        )
        return Batch(
            inputs=torch.from_numpy(inputs.astype(np.int64)),
            outputs=torch.from_numpy(outputs.astype(np.int64)),
            input_sizes=torch.from_numpy(input_sizes.astype(np.int64)),
            output_sizes=torch.from_numpy(output_sizes.astype(np.int64)),
            task=torch.from_numpy(self.pair_task[pair].astype(np.int64)),
            dihedral=torch.from_numpy(dihedrals.astype(np.int64)),
            colours=torch.from_numpy(colours.astype(np.int64)),
            from_eval=torch.from_numpy(from_eval),
        )

    def validation_batch(self) -> Batch | None:
        """The held-out pairs, unaugmented, as one batch (None when nothing is held out)."""
        if not self.validation:
            return None
        n = len(self.validation)
        inputs, input_sizes = encode_grids([p.input for _, p in self.validation], self.max_size)
        outputs, output_sizes = encode_grids([p.output for _, p in self.validation], self.max_size)
        identity = np.tile(np.arange(10), (n, 1))
        return Batch(
            inputs=torch.from_numpy(inputs.astype(np.int64)),
            outputs=torch.from_numpy(outputs.astype(np.int64)),
            input_sizes=torch.from_numpy(input_sizes),
            output_sizes=torch.from_numpy(output_sizes),
            task=torch.tensor([t for t, _ in self.validation], dtype=torch.int64),
            dihedral=torch.zeros(n, dtype=torch.int64),
            colours=torch.from_numpy(identity.astype(np.int64)),
            from_eval=torch.zeros(n, dtype=torch.bool),
        )

    def state_dict(self) -> dict[str, Any]:
        if self.bucket_window > 1 and self._window:
            # the window is redrawn from the generator state that drew it
            n = len(self._window[0][0])
            return {"rng": self._window_rng, "window": [n, self._window_pos]}
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._window, self._window_pos = [], 0
        if "window" in state:
            n, pos = state["window"]
            self._fill_window(n)
            self._window_pos = pos


_EMPTY = np.zeros((0, 0), dtype=np.uint8)


def _alone(task: Task) -> list[Pair]:
    """A task's self-supervised examples: each input grid (demonstrations, then test inputs)
    as the output of an example whose input is empty. A Task holds no test output."""
    return [Pair(_EMPTY, grid) for grid in (*(p.input for p in task.demos), *task.test_inputs)]


def hold_out_demos(tasks: TaskSet, n: int, seed: int = 0) -> tuple[TaskSet, list[tuple[str, Pair]]]:
    """Move the last demonstration of ``n`` random tasks (those with >= 3) out of ``tasks``."""
    eligible = [i for i, t in enumerate(tasks) if len(t.demos) >= 3]
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(eligible)[:n].tolist())
    kept, held = [], []
    for i, task in enumerate(tasks):
        if i in chosen:
            held.append((task.id, task.demos[-1]))
            task = dataclasses.replace(task, demos=task.demos[:-1])
        kept.append(task)
    return TaskSet(tasks.name, tuple(kept), tasks.solutions), held


def stream_from_config(cfg: DataConfig, *, rank: int = 0, world_size: int = 1) -> TrainingStream:
    """Load and validate the configured sources and build the training stream.

    ``cfg.val_pairs`` demonstrations of train-split tasks are held out of the stream for
    validation (:meth:`TrainingStream.validation_batch`). ``cfg.exclude_ids``' tasks are not
    read at all.
    """
    filters = {"max_size": cfg.max_size, "ids": cfg.ids, "limit": cfg.limit, "missing_ok": True}
    filters["exclude"] = excluded_ids(cfg.exclude_ids)  # held out: nothing of theirs is read
    train = load_tasks(cfg.train_sources, **filters) if cfg.train_sources else TaskSet("", (), {})
    evals = load_tasks(cfg.eval_sources, **filters) if cfg.eval_sources else None
    if cfg.ids is not None:
        found = set(train.ids) | set(evals.ids if evals is not None else ())
        missing = sorted(set(cfg.ids) - found - filters["exclude"])
        if missing:
            sources = ", ".join(cfg.train_sources + cfg.eval_sources)
            raise DataError(f"data.ids: no task with id {', '.join(missing)} in {sources}")
    train, validation = hold_out_demos(train, cfg.val_pairs, cfg.seed)
    return TrainingStream(
        train,
        evals.tasks if evals is not None else (),
        max_size=cfg.max_size,
        eval_weight=cfg.eval_weight,
        augment=cfg.augment,
        permute_background=cfg.permute_background,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        validation=validation,
        bucket_window=cfg.bucket_window,
        self_supervised=cfg.self_supervised,
    )
