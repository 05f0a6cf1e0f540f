"""Sampling output grids from a trained denoiser.

Starting from pure noise on the whole canvas, the sampler visits N steps of the training grid
(``sampling_steps``), noisiest first. At each step a first pass gives logits; with
self-conditioning a second pass at the same step takes them as its self-conditioning input.
The output size is the size head's argmax, re-read at every step, or fixed in advance (the
evaluator's size vote: every augmented view of a test input reads its size head once, at the
noisiest step, and they agree on one size); cells outside it are re-noised as in training.
The sampler is given test *inputs* only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor

from arcdiff.data.augment import (
    DIHEDRAL_BITS,
    Augmentation,
    augment_canvases,
    sample_colour_perms,
)
from arcdiff.data.encode import PAD, decode_grids, encode_grids
from arcdiff.data.tasks import Grid, Task
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.errors import DataError
from arcdiff.eval.score import TestPrediction
from arcdiff.eval.vote import Candidate, top2, vote
from arcdiff.model.denoiser import Denoiser, DenoiserOutput
from arcdiff.runs.device import fast_math, seeded_generator


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
    sizes: Tensor | None = None,
) -> Samples:
    """Sample an output grid for each input canvas.

    inputs (B, S, S) tokens (PAD outside the grid), task (B,), dihedral (B,).
    ``argmax``: deterministic (each step feeds the x0 argmax forward); otherwise ancestral
    sampling of the posterior. ``two_pass``: second, self-conditioned pass at every step.
    ``sizes`` (B, 2) as (h, w): fixed output sizes (e.g. agreed across augmentations by
    :func:`size_votes`); None reads the size head at every step. ``generator``: on the
    inputs' device (:func:`seeded_generator`); None draws from torch's global generator.
    """
    model.eval()
    b, s, _ = inputs.shape
    device = inputs.device
    x = diffusion.noise_like(torch.zeros_like(inputs), generator)
    steps = sampling_steps(diffusion.num_timesteps, num_steps).tolist()
    fixed = None if sizes is None else sizes.to(device).clamp(1, s)
    for i, step in enumerate(steps):
        logsnr = diffusion.logsnr(torch.full((b,), step)).to(device)
        out, step_sizes = denoise(model, inputs, x, logsnr, task, dihedral, fixed, two_pass)
        valid = size_mask(step_sizes, s)
        next_step = steps[i + 1] if i + 1 < len(steps) else -1
        x = diffusion.reverse_step(
            x, out.logits, step, next_step, valid, argmax=argmax, generator=generator
        ).prev_sample
    return finish(out.logits, x, valid, step_sizes)


def denoise(
    model: Denoiser,
    inputs: Tensor,
    x: Tensor,
    logsnr: Tensor,
    task: Tensor,
    dihedral: Tensor,
    fixed: Tensor | None,
    two_pass: bool,
) -> tuple[DenoiserOutput, Tensor]:
    """One step's prediction for the canvas ``x`` (B, S, S) and the (B, 2) sizes it samples at:
    ``fixed``, or the size head's argmax. With self-conditioning and ``two_pass``, a second
    pass takes the first one's logits."""
    s = x.shape[-1]
    out = model(inputs, x, logsnr, task, dihedral)
    sizes = fixed if fixed is not None else out.size_logits.argmax(-1).clamp(max=s - 1) + 1
    if two_pass and model.self_condition:
        valid = size_mask(sizes, s)
        out = model(inputs, x, logsnr, task, dihedral, sc_logits=out.logits, valid=valid)
        if fixed is None:
            sizes = out.size_logits.argmax(-1).clamp(max=s - 1) + 1
    return out, sizes


def finish(logits: Tensor, x: Tensor, valid: Tensor, sizes: Tensor) -> Samples:
    """The sampler's output from its last step: the grid ``x`` (B, S, S) inside ``valid``, its
    confidence and runner-up under the last step's ``logits`` (B, S, S, 10)."""
    b, s, _ = x.shape
    probs = logits.float().softmax(-1)  # (B, S, S, 10)
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


SIZE_NOISE_SEED = 0  # the size vote's noisy canvas is the same for every eval seed


@torch.no_grad()
def size_logprobs(
    model: Denoiser, diffusion: DiscreteDiffusion, inputs: Tensor, task: Tensor, dihedral: Tensor
) -> Tensor:
    """(B, 2, S_max) log-probabilities of the output height and width, read once at the
    noisiest sampling step (the output canvas is pure noise, as sampling starts, drawn on the
    inputs' device from :data:`SIZE_NOISE_SEED`)."""
    model.eval()
    first = int(sampling_steps(diffusion.num_timesteps, 1)[0])
    generator = seeded_generator(inputs.device, SIZE_NOISE_SEED)
    noise = diffusion.noise_like(torch.zeros_like(inputs), generator)
    logsnr = diffusion.logsnr(torch.full((inputs.shape[0],), first)).to(inputs.device)
    out = model(inputs, noise, logsnr, task, dihedral)
    return out.size_logits.float().log_softmax(-1)


SIZE_RATIOS = ((1, 1), (2, 1), (3, 1), (1, 2), (1, 3))  # output length / input length


def demo_size_prior(task: Task, test_input: Grid, max_size: int, floor: float = 0.05) -> np.ndarray:
    """(2, S) log-prior of the test output's height and width from the demonstrations alone.

    For each side, the rules every demonstration obeys are kept: a constant length, or the
    input's height or width times 1, 2, 3, 1/2 or 1/3. Each kept rule names a length for the
    test input; those lengths share ``1 - floor`` of the mass, every length keeps a share of
    ``floor`` (so the size head can overrule the prior). No rule kept: a flat prior.
    """
    prior = np.full((2, max_size), floor / max_size)
    for side in range(2):
        named = []
        outs = {p.output.shape[side] for p in task.demos}
        if len(outs) == 1:
            named.append(outs.pop())
        for source in range(2):
            for num, den in SIZE_RATIOS:
                if all(
                    p.output.shape[side] * den == p.input.shape[source] * num for p in task.demos
                ):
                    length, rest = divmod(test_input.shape[source] * num, den)
                    if rest == 0:
                        named.append(length)
        named = [n for n in named if 1 <= n <= max_size]
        if not named:
            prior[side] = 1.0 / max_size
            continue
        for n in named:
            prior[side, n - 1] += (1.0 - floor) / len(named)
    return np.log(prior)


def size_votes(
    logp: np.ndarray, dihedrals: np.ndarray, groups: np.ndarray, prior: np.ndarray | None = None
) -> np.ndarray:
    """One size per group of augmented views of a test input.

    logp (B, 2, S) per-view size log-probabilities, dihedrals (B,), groups (B,) group ids ->
    (B, 2) sizes (h, w), each in its own view's frame. Log-probabilities are mapped back to
    the original frame (height and width swap under a transposing transform), summed over the
    group and argmaxed per side, so every view of a test input samples the same-shaped grid.
    ``prior`` (G, 2, S): a log-prior per group in the original frame, added once per view (a
    product of each view's posterior with the prior).
    """
    swap = DIHEDRAL_BITS[dihedrals, 0].astype(bool)
    original = np.where(swap[:, None, None], logp[:, ::-1], logp)  # (B, 2, S)
    if prior is not None:
        original = original + prior[groups]
    total = np.zeros((groups.max() + 1 if len(groups) else 0, *logp.shape[1:]))
    np.add.at(total, groups, original)
    agreed = total.argmax(-1)[groups] + 1  # (B, 2) in the original frame
    return np.where(swap[:, None], agreed[:, ::-1], agreed)


def _side_batches(sides: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(canvas side, item indices) batches, each of one side."""
    order = np.argsort(sides, kind="stable")
    for side in np.unique(sides):
        group = order[sides[order] == side]
        for start in range(0, len(group), batch_size):
            yield int(side), group[start : start + batch_size]


@dataclass(frozen=True)
class _Item:
    task: int  # position in the task list
    test: int  # test input index
    aug: Augmentation


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
    draw: Callable[..., Samples] = sample,
    rank: Callable[..., list[Candidate]] | None = None,
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
    all voted. ``draw``: the sampler, :func:`sample`'s signature (``arcdiff.eval.decode``).
    ``rank``: re-ranks a test input's voted candidates (``arcdiff.eval.rank``), given the
    model, the diffusion, the candidates and the views (test input, task, augmentations).
    """
    device = device or next(model.parameters()).device
    rng = np.random.default_rng(seed)
    identity = Augmentation.identity()
    items: list[_Item] = []
    check_known(tasks, task_index)
    for t, task in enumerate(tasks):
        for i in range(len(task.test_inputs)):
            if not maj:
                items += [_Item(t, i, identity)] * samples
                continue
            perms = sample_colour_perms(rng, num_augs)
            views = [Augmentation(k % 8, perms[k]) for k in range(num_augs)]
            items += [_Item(t, i, view) for view in views for _ in range(samples)]
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
    k = (1 if not maj else num_augs) * samples

    def on_device(batch: np.ndarray, side: int) -> tuple[Tensor, Tensor, Tensor]:
        """A batch's input canvases (cropped to ``side``), task rows and dihedral ids."""
        inputs = torch.from_numpy(tokens[batch, :side, :side].astype(np.int64))
        return (
            inputs.to(device),
            task_ids[batch].to(device),
            torch.from_numpy(dihedrals[batch]).to(device),
        )

    fixed = None
    if size_vote:  # one forward pass per view, then one size per test input
        logp = np.zeros((len(items), 2, s), dtype=np.float64)
        for side, batch in _side_batches(sides, batch_size):
            with fast_math(device, bf16):
                read = size_logprobs(model, diffusion, *on_device(batch, side))
            logp[batch] = read.cpu().numpy()
        prior = None
        if size_prior:
            heads = items[::k]  # one item per test input, in group order
            prior = np.stack(
                [demo_size_prior(tasks[it.task], grids[i * k], s) for i, it in enumerate(heads)]
            )
        groups = np.arange(len(items)) // k
        fixed = torch.from_numpy(size_votes(logp, dihedrals, groups, prior))
    decoded: list[tuple[Grid, float, Grid, float]] = [None] * len(items)  # type: ignore[list-item]
    job = progress.add_task("sample", total=len(items)) if progress else None
    generator = seeded_generator(device, seed)
    for side, batch in _side_batches(sides, batch_size):
        with fast_math(device, bf16):
            out = draw(
                model,
                diffusion,
                *on_device(batch, side),
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

    predictions: dict[str, list[TestPrediction]] = {t.id: [] for t in tasks}
    for start in range(0, len(items), k):
        group = items[start : start + k]
        inverses = [it.aug.inverse() for it in group]
        rows = decoded[start : start + k]
        if maj or samples > 1:
            candidates = vote(
                [inv.apply(g) for inv, (g, *_rest) in zip(inverses, rows, strict=True)],
                [c for _, c, _, _ in rows],
            )
        else:
            (g, c, g2, c2) = rows[0]
            candidates = [Candidate(g, 1, c), Candidate(g2, 0, c2)]
        if rank is not None:
            task = tasks[group[0].task]
            candidates = rank(
                model,
                diffusion,
                candidates,
                test_input=task.test_inputs[group[0].test],
                task_id=task_index[task.id],
                views=[it.aug for it in group[::samples]],
                side=int(sides[start]),
                device=device,
            )
        first, second = top2(candidates)
        predictions[tasks[group[0].task].id].append(
            TestPrediction(tuple(candidates), first, second)
        )
    return predictions
