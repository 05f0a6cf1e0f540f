"""Sampling output grids from a trained denoiser.

Starting from pure noise on the whole canvas, the sampler visits N steps of the training grid
(``sampling_steps``), noisiest first. At each step a first pass gives logits; with
self-conditioning a second pass at the same step takes them as its self-conditioning input.
The output size is the size head's argmax, re-read at every step; cells outside it are
re-noised as in training. The sampler is given test *inputs* only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor

from arcdiff.data.augment import Augmentation, augment_canvases, sample_colour_perms
from arcdiff.data.encode import PAD, decode_grids, encode_grids
from arcdiff.data.tasks import Grid, Task
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import DataError
from arcdiff.eval.score import TestPrediction
from arcdiff.eval.vote import Candidate, top2, vote
from arcdiff.model.denoiser import Denoiser


@dataclass(frozen=True)
class Samples:
    tokens: Tensor  # (B, S, S) int64 colours, PAD outside each predicted grid
    sizes: Tensor  # (B, 2) int64 predicted (h, w)
    confidence: Tensor  # (B,) mean max-probability over the predicted grid's cells
    # the second most likely grid under the final per-cell distribution: the argmax with its
    # least certain cell (smallest top-1 / top-2 log-probability margin) set to its top-2 colour
    runner_up: Tensor  # (B, S, S)
    runner_up_confidence: Tensor  # (B,)


def size_mask(sizes: Tensor, s: int) -> Tensor:
    """(B, S, S) bool: True inside (h, w) grids."""
    idx = torch.arange(s, device=sizes.device)
    return (idx[None, :, None] < sizes[:, 0, None, None]) & (
        idx[None, None, :] < sizes[:, 1, None, None]
    )


@torch.no_grad()
def sample(
    model: Denoiser,
    diffusion: DiscreteDiffusion,
    inputs: Tensor,
    task: Tensor,
    dihedral: Tensor,
    *,
    num_steps: int = 32,
    argmax: bool = True,
    two_pass: bool = True,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample an output grid for each input canvas.

    inputs (B, S, S) tokens (PAD outside the grid), task (B,), dihedral (B,).
    ``argmax``: deterministic (each step feeds the x0 argmax forward); otherwise ancestral
    sampling of the posterior. ``two_pass``: second, self-conditioned pass at every step.
    """
    model.eval()
    b, s, _ = inputs.shape
    device = inputs.device
    x = diffusion.noise_like(torch.zeros_like(inputs), generator).to(device)
    steps = sampling_steps(diffusion.num_timesteps, num_steps).tolist()
    for i, step in enumerate(steps):
        logsnr = diffusion.logsnr(torch.full((b,), step)).to(device)
        out = model(inputs, x, logsnr, task, dihedral)
        sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1  # (B, 2) as (h, w)
        if two_pass and model.self_condition:
            valid = size_mask(sizes, s)
            out = model(inputs, x, logsnr, task, dihedral, sc_logits=out.logits, valid=valid)
            sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1
        valid = size_mask(sizes, s)
        next_step = steps[i + 1] if i + 1 < len(steps) else -1
        x = diffusion.reverse_step(
            x, out.logits, step, next_step, valid, argmax=argmax, generator=generator
        ).prev_sample
    probs = out.logits.float().softmax(-1)  # (B, S, S, 10)
    top = probs.topk(2, dim=-1)
    cells = valid.sum(dim=(1, 2))
    confidence = (top.values[..., 0] * valid).sum(dim=(1, 2)) / cells
    margin = (top.values[..., 0].log() - top.values[..., 1].log()).masked_fill(~valid, torch.inf)
    flip = F.one_hot(margin.flatten(1).argmin(1), s * s).view(b, s, s).bool()  # (B, S, S)
    runner_up = torch.where(flip, top.indices[..., 1], x)
    swapped = (top.values[..., 1] * flip).sum(dim=(1, 2)) - (top.values[..., 0] * flip).sum(
        dim=(1, 2)
    )
    return Samples(
        tokens=torch.where(valid, x, PAD),
        sizes=sizes,
        confidence=confidence,
        runner_up=torch.where(valid, runner_up, PAD),
        runner_up_confidence=confidence + swapped / cells,
    )


def canvas_side(task: Task, test_input: Grid, max_size: int) -> int:
    """The canvas side a test input is sampled on when the model was trained on cropped
    canvases: its task's largest grid, grown by the largest output/input side ratio of the
    demonstrations when the test input is the larger one. Reads demonstrations and the test
    input only."""
    demo_side = max(max(*p.input.shape, *p.output.shape) for p in task.demos)
    ratio = max(max(p.output.shape) / max(p.input.shape) for p in task.demos)
    grown = int(np.ceil(max(test_input.shape) * ratio))
    return min(max_size, max(demo_side, max(test_input.shape), grown))


@dataclass(frozen=True)
class _Item:
    task: int  # position in the task list
    test: int  # test input index
    aug: Augmentation


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
) -> dict[str, list[TestPrediction]]:
    """Predict two attempts for every test input of ``tasks``.

    The sampler sees :class:`Task` objects: demonstrations and test *inputs* only.
    ``maj``: ``num_augs`` augmentations per test input (dihedral ids 0..7 in turn, each with a
    random colour permutation), predictions mapped back and voted. Otherwise one identity
    sample whose two most likely decodings are the attempts. ``task_index`` maps task ids to
    the model's task embeddings. ``crop``: sample each test input on a canvas cropped to
    its task's grids (:func:`canvas_side`), batched by canvas side, as models trained with
    size buckets expect.
    """
    device = device or next(model.parameters()).device
    rng = np.random.default_rng(seed)
    identity = Augmentation.identity()
    items: list[_Item] = []
    for t, task in enumerate(tasks):
        if task.id not in task_index:
            raise DataError(f"task {task.id} has no embedding in this model (not trained on)")
        for i in range(len(task.test_inputs)):
            if not maj:
                items.append(_Item(t, i, identity))
                continue
            perms = sample_colour_perms(rng, num_augs)
            items += [_Item(t, i, Augmentation(k % 8, perms[k])) for k in range(num_augs)]
    grids = [tasks[it.task].test_inputs[it.test] for it in items]
    tokens, sizes = encode_grids(grids, model.max_size)
    dihedrals = np.array([it.aug.dihedral for it in items], dtype=np.int64)
    colours = np.stack([it.aug.colours for it in items]) if items else np.zeros((0, 10))
    tokens, _ = augment_canvases(tokens, sizes, dihedrals, colours)
    task_ids = torch.tensor([task_index[tasks[it.task].id] for it in items], dtype=torch.long)

    s = model.max_size
    sides = np.array(
        [
            canvas_side(tasks[it.task], g, s) if crop else s
            for it, g in zip(items, grids, strict=True)
        ],
        dtype=np.int64,
    )
    order = np.argsort(sides, kind="stable")  # batches of one canvas side each
    decoded: list[tuple[Grid, float, Grid, float]] = [None] * len(items)  # type: ignore[list-item]
    job = progress.add_task("sample", total=len(items)) if progress else None
    generator = torch.Generator().manual_seed(seed)
    for side in np.unique(sides):
        group = order[sides[order] == side]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            out = sample(
                model,
                diffusion,
                torch.from_numpy(tokens[batch, :side, :side].astype(np.int64)).to(device),
                task_ids[batch].to(device),
                torch.from_numpy(dihedrals[batch]).to(device),
                num_steps=num_steps,
                generator=generator if device.type == "cpu" else None,
            )
            h_w = out.sizes.cpu().numpy()
            best = decode_grids(out.tokens.cpu().numpy(), h_w)
            second = decode_grids(out.runner_up.cpu().numpy(), h_w)
            conf, conf2 = out.confidence.tolist(), out.runner_up_confidence.tolist()
            for i, row in zip(batch, zip(best, conf, second, conf2, strict=True), strict=True):
                decoded[i] = row
            if progress is not None and job is not None:
                progress.update(job, advance=len(batch))

    predictions: dict[str, list[TestPrediction]] = {t.id: [] for t in tasks}
    k = 1 if not maj else num_augs
    for start in range(0, len(items), k):
        group = items[start : start + k]
        inverses = [it.aug.inverse() for it in group]
        rows = decoded[start : start + k]
        if maj:
            candidates = vote(
                [inv.apply(g) for inv, (g, *_rest) in zip(inverses, rows, strict=True)],
                [c for _, c, _, _ in rows],
            )
        else:
            (g, c, g2, c2) = rows[0]
            candidates = [Candidate(g, 1, c), Candidate(g2, 0, c2)]
        first, second = top2(candidates)
        predictions[tasks[group[0].task].id].append(
            TestPrediction(tuple(candidates), first, second)
        )
    return predictions
