"""Two attempts for every test input of a set of tasks: views, encoding, sampling, vote/rank.

Each test input is shown as ``num_augs`` augmented views (or the identity alone), each drawn
``samples`` times; the views first agree on an output size (:mod:`arcdiff.eval.sizes`), then a
sampler (:mod:`arcdiff.eval.samplers`) draws every view in batches of one canvas side, and the
draws, mapped back to the original frame, are voted (:mod:`arcdiff.eval.vote`) and optionally
re-ranked (:mod:`arcdiff.eval.rank`). Reads demonstrations and test inputs only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from arcdiff.config import EvalConfig
from arcdiff.data.augment import Augmentation, augment_canvases, sample_colour_perms
from arcdiff.data.encode import decode_grids, encode_grids
from arcdiff.data.tasks import Grid, Task
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import DataError
from arcdiff.eval.rank import ranker_for
from arcdiff.eval.sample import sample
from arcdiff.eval.samplers import Sampler, sampler_for
from arcdiff.eval.score import TestPrediction
from arcdiff.eval.sizes import canvas_side, demo_size_prior, size_logprobs, size_votes
from arcdiff.eval.vote import Candidate, top2, vote
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.device import fast_math, seeded_generator

Decoded = tuple[Grid, float, Grid, float]  # best grid, its confidence, runner-up, confidence


def check_known(
    tasks: Sequence[Task], task_index: Mapping[str, int], source: str = "", run: Path | None = None
) -> None:
    """Every task has a row in the model's task embedding; otherwise a DataError naming the
    new tasks and the command that handles them (``arcdiff lora``)."""
    new = [task.id for task in tasks if task.id not in task_index]
    if not new:
        return
    shown = ", ".join(new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else "")
    where = f"--run {run}" if run else "--run RUN"
    tasks_opt = source or "SOURCE"
    raise DataError(
        f"{len(new)} task(s) have no embedding in this model (it never trained on them: "
        f"{shown}); adapt it to new tasks with `arcdiff lora {where} --tasks {tasks_opt}`, "
        "then `arcdiff evaluate --adapter NAME`"
    )


@dataclass(frozen=True)
class _Item:
    task: int  # position in the task list
    test: int  # test input index
    aug: Augmentation


@dataclass(frozen=True)
class _Views:
    """Every item's test input in its view's frame, ready to batch."""

    items: list[_Item]  # k consecutive items per test input
    grids: list[Grid]  # each item's test input (original frame)
    tokens: np.ndarray  # (B, S, S) uint8 augmented input canvases
    dihedrals: np.ndarray  # (B,) int64
    task_ids: Tensor  # (B,) rows of the model's task embedding
    sides: np.ndarray  # (B,) int64 canvas side each item is sampled on
    k: int  # items per test input: views x draws

    def on_device(
        self, batch: np.ndarray, side: int, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A batch's input canvases (cropped to ``side``), task rows and dihedral ids."""
        inputs = torch.from_numpy(self.tokens[batch, :side, :side].astype(np.int64))
        return (
            inputs.to(device),
            self.task_ids[batch].to(device),
            torch.from_numpy(self.dihedrals[batch]).to(device),
        )

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(canvas side, item indices) batches, each of one side."""
        order = np.argsort(self.sides, kind="stable")
        for side in np.unique(self.sides):
            group = order[self.sides[order] == side]
            for start in range(0, len(group), batch_size):
                yield int(side), group[start : start + batch_size]


def _views(
    tasks: Sequence[Task],
    task_index: Mapping[str, int],
    max_size: int,
    *,
    maj: bool,
    num_augs: int,
    samples: int,
    seed: int,
    crop: bool,
) -> _Views:
    """The items to sample: ``num_augs`` views per test input (dihedral ids 0..7 in turn, each
    with a colour permutation drawn from ``seed``) or the identity alone, ``samples`` each."""
    rng = np.random.default_rng(seed)
    identity = Augmentation.identity()
    items: list[_Item] = []
    for t, task in enumerate(tasks):
        for i in range(len(task.test_inputs)):
            if not maj:
                items += [_Item(t, i, identity)] * samples
                continue
            perms = sample_colour_perms(rng, num_augs)
            views = [Augmentation(k % 8, perms[k]) for k in range(num_augs)]
            items += [_Item(t, i, view) for view in views for _ in range(samples)]
    grids = [tasks[it.task].test_inputs[it.test] for it in items]
    tokens, sizes = encode_grids(grids, max_size)
    dihedrals = np.array([it.aug.dihedral for it in items], dtype=np.int64)
    colours = np.stack([it.aug.colours for it in items]) if items else np.zeros((0, 10))
    tokens, _ = augment_canvases(tokens, sizes, dihedrals, colours)
    task_ids = torch.tensor([task_index[tasks[it.task].id] for it in items], dtype=torch.long)
    sides = np.array(
        [
            canvas_side(tasks[it.task], g, max_size) if crop else max_size
            for it, g in zip(items, grids, strict=True)
        ],
        dtype=np.int64,
    )
    k = (1 if not maj else num_augs) * samples
    return _Views(items, grids, tokens, dihedrals, task_ids, sides, k)


def _agreed_sizes(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    tasks: Sequence[Task],
    views: _Views,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    size_prior: bool,
) -> Tensor:
    """(B, 2) one size per test input, in each view's frame: one size-head read per view
    (:func:`size_logprobs`), voted per test input (:func:`size_votes`), weighing the
    demonstrations' :func:`demo_size_prior` when ``size_prior``."""
    s, k = model.max_size, views.k
    logp = np.zeros((len(views.items), 2, s), dtype=np.float64)
    for side, batch in views.batches(batch_size):
        with fast_math(device, bf16):
            read = size_logprobs(model, diffusion, *views.on_device(batch, side, device))
        logp[batch] = read.cpu().numpy()
    prior = None
    if size_prior:
        heads = views.items[::k]  # one item per test input, in group order
        prior = np.stack(
            [demo_size_prior(tasks[it.task], views.grids[i * k], s) for i, it in enumerate(heads)]
        )
    groups = np.arange(len(views.items)) // k
    return torch.from_numpy(size_votes(logp, views.dihedrals, groups, prior))


def _draw(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    views: _Views,
    fixed: Tensor | None,
    draw: Sampler,
    *,
    num_steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    bf16: bool,
    progress: Progress | None,
) -> list[Decoded]:
    """Every item's sampled grid and runner-up (in its view's frame), batched by canvas side,
    with the sampler's noise drawn on ``device`` from ``seed``."""
    decoded: list[Decoded] = [None] * len(views.items)  # type: ignore[list-item]
    job = progress.add_task("sample", total=len(views.items)) if progress else None
    generator = seeded_generator(device, seed)
    for side, batch in views.batches(batch_size):
        with fast_math(device, bf16):
            out = draw(
                model,
                diffusion,
                *views.on_device(batch, side, device),
                num_steps=num_steps,
                generator=generator,
                sizes=None if fixed is None else fixed[batch],
            )
        h_w = out.sizes.cpu().numpy()
        best = decode_grids(out.tokens.cpu().numpy(), h_w)
        second = decode_grids(out.runner_up.cpu().numpy(), h_w)
        conf, conf2 = out.confidence.tolist(), out.runner_up_confidence.tolist()
        for i, row in zip(batch, zip(best, conf, second, conf2, strict=True), strict=True):
            decoded[i] = row
        if progress is not None and job is not None:
            progress.update(job, advance=len(batch))
    return decoded


def _candidates(group: Sequence[_Item], rows: Sequence[Decoded], voted: bool) -> list[Candidate]:
    """A test input's candidates in the original frame: its draws voted, or (one identity
    draw) its grid and runner-up."""
    if voted:
        inverses = [it.aug.inverse() for it in group]
        return vote(
            [inv.apply(g) for inv, (g, *_rest) in zip(inverses, rows, strict=True)],
            [c for _, c, _, _ in rows],
        )
    (g, c, g2, c2) = rows[0]
    return [Candidate(g, 1, c), Candidate(g2, 0, c2)]


def _lone(group: Sequence[_Item], rows: Sequence[Decoded]) -> Candidate:
    """Attempt 2 when every view voted for one grid: the most confident view's runner-up (its
    grid with the least certain cell at its second colour; never the voted grid), in the
    original frame, with no votes; added before any ranking, which scores it too. Without it
    the second attempt repeats the first."""
    best = max(range(len(rows)), key=lambda i: rows[i][3])
    grid, _, runner_up, confidence = rows[best]
    return Candidate(group[best].aug.inverse().apply(runner_up), 0, confidence)


def predict_options(settings: EvalConfig) -> dict[str, Any]:
    """:func:`predict_tasks`'s options as an evaluation config says: the one place its fields
    become the sampler, the ranking and their settings."""
    plain = ("num_steps", "maj", "num_augs", "batch_size", "seed", "size_vote", "size_prior")
    return {name: getattr(settings, name) for name in (*plain, "bf16", "samples")} | {
        "distinct": settings.distinct_attempts,
        "draw": sampler_for(
            settings.sampler, temperature=settings.temperature, remask=settings.remask
        ),
        "rank": ranker_for(
            settings.ranking,
            visit_weight=settings.visit_weight,
            top=settings.rank_top,
            batch_size=settings.batch_size,
            seed=settings.seed,
        ),
    }


def predict_tasks(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    tasks: Sequence[Task],
    task_index: Mapping[str, int],
    *,
    num_steps: int = 32,
    maj: bool = True,
    num_augs: int = 8,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | None = None,
    progress: Progress | None = None,
    crop: bool = False,
    size_vote: bool = True,
    size_prior: bool = True,
    bf16: bool = True,
    samples: int = 1,
    draw: Sampler = sample,
    rank: Callable[..., list[Candidate]] | None = None,
    distinct: bool = True,
) -> dict[str, list[TestPrediction]]:
    """Predict two attempts for every test input of ``tasks``.

    The sampler sees :class:`Task` objects: demonstrations and test *inputs* only.
    ``maj``: ``num_augs`` augmentations per test input (dihedral ids 0..7 in turn, each with a
    random colour permutation), predictions mapped back and voted. Otherwise one identity
    sample whose two most likely decodings are the attempts. ``task_index`` maps task ids to
    the model's task embeddings. ``crop``: sample each test input on a canvas cropped to
    its task's grids (:func:`canvas_side`), batched by canvas side, as models trained with
    size buckets expect. ``size_vote``: the views of a test input first agree on one output
    size (:func:`size_votes`), then each samples its grid at that size; otherwise each view
    reads its own size head at every step. ``size_prior`` (with the vote): the vote also
    weighs :func:`demo_size_prior`, the lengths the demonstrations' size rules name.
    ``bf16``: bf16 autocast and TF32 on CUDA (:func:`fast_math`); no effect elsewhere. The
    sampler's noise is drawn on ``device`` from ``seed`` (:func:`seeded_generator`).
    ``samples``: draws per view (batched with the views; several need a stochastic ``draw``),
    all voted. ``draw``: the sampler (:data:`arcdiff.eval.samplers.SAMPLERS`).
    ``rank``: re-ranks a test input's voted candidates (``arcdiff.eval.rank``), given the
    model, the diffusion, the candidates and the views (test input, task, augmentations).
    ``distinct``: a lone voted grid is joined by the views' best runner-up (:func:`_lone`).
    """
    device = device or next(model.parameters()).device
    check_known(tasks, task_index)
    views = _views(
        tasks, task_index, model.max_size,
        maj=maj, num_augs=num_augs, samples=samples, seed=seed, crop=crop,
    )  # fmt: skip
    fixed = None
    if size_vote:  # one forward pass per view, then one size per test input
        fixed = _agreed_sizes(
            model, diffusion, tasks, views,
            batch_size=batch_size, device=device, bf16=bf16, size_prior=size_prior,
        )  # fmt: skip
    decoded = _draw(
        model, diffusion, views, fixed, draw,
        num_steps=num_steps, batch_size=batch_size, seed=seed, device=device, bf16=bf16,
        progress=progress,
    )  # fmt: skip
    predictions: dict[str, list[TestPrediction]] = {t.id: [] for t in tasks}
    for start in range(0, len(views.items), views.k):
        group = views.items[start : start + views.k]
        candidates = _candidates(group, decoded[start : start + views.k], maj or samples > 1)
        task = tasks[group[0].task]
        if distinct and len(candidates) == 1:
            candidates = [*candidates, _lone(group, decoded[start : start + views.k])]
        if rank is not None:
            candidates = rank(
                model,
                diffusion,
                candidates,
                test_input=task.test_inputs[group[0].test],
                task_id=task_index[task.id],
                views=[it.aug for it in group[::samples]],
                side=int(views.sides[start]),
                device=device,
            )
        first, second = top2(candidates)
        predictions[task.id].append(TestPrediction(tuple(candidates), first, second))
    return predictions
