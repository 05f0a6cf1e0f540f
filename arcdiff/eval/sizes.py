"""The output size of a test input: the size vote across its augmented views, the
demonstrations' size prior, and the canvas side a cropped model samples it on.

Reads demonstrations and test inputs only, never a test output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from arcdiff.data.augment import DIHEDRAL_BITS
from arcdiff.data.tasks import Grid, Task
from arcdiff.diffusion.discrete import DiscreteDiffusion, sampling_steps
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.device import seeded_generator


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
