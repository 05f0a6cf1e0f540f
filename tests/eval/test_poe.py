"""Product-of-experts ranking against a denoiser certain of the truth under every view, on a
non-square ARC grid with colour permutations that are not their own inverse: the truth scores
about zero under each of the 8 dihedral views and ranks above candidates one cell away."""

import numpy as np
import pytest
import torch
from torch import nn

from arcdiff.data.augment import Augmentation
from arcdiff.data.encode import PAD
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.rank import poe_rank, view_scores
from arcdiff.eval.vote import Candidate
from arcdiff.model.denoiser import DenoiserOutput

TASK = "d017b73f"  # aa1:eval; test input 3x11, output 3x8 in colours 0, 1, 2, 3, 5
SIDE = 11
CERTAIN = 60.0  # logit margin: log-probability of the favoured class ~ -9 e^-60


def perm_with_cycles(seed: int) -> np.ndarray:
    """A colour permutation keeping 0 fixed (as the augmentation does) that is not its own
    inverse, so mapping by the inverse is a different map."""
    rng = np.random.default_rng(seed)
    while True:
        perm = np.concatenate([[0], rng.permutation(9) + 1])
        if not np.array_equal(np.argsort(perm), perm):
            return perm


VIEWS = [Augmentation(d, perm_with_cycles(d)) for d in range(8)]


class CertainDenoiser(nn.Module):
    """Under view ``views[d]`` (told by the dihedral id) and shown that view of the test input,
    certain of that view of the truth: its colours and its size. Shown anything else, it says
    nothing (flat logits)."""

    self_condition = False

    def __init__(self, test_input, truth, views, max_size):
        super().__init__()
        self.max_size = max_size
        self.dummy = nn.Parameter(torch.zeros(1))
        self.by_dihedral = {a.dihedral: (a.apply(test_input), a.apply(truth)) for a in views}

    def forward(self, inputs, noisy, logsnr, task, dihedral, sc_logits=None, valid=None):
        b, s, _ = inputs.shape
        logits = torch.zeros(b, s, s, 10)
        sizes = torch.zeros(b, 2, self.max_size)
        for k in range(b):
            seen, answer = self.by_dihedral[int(dihedral[k])]
            h, w = seen.shape
            shown = inputs[k].numpy()
            if not ((shown[:h, :w] == seen).all() and (shown[h:] == PAD).all()):
                continue
            ah, aw = answer.shape
            logits[k, :ah, :aw] = nn.functional.one_hot(torch.from_numpy(answer).long(), 10)
            logits[k] *= CERTAIN
            sizes[k, 0, ah - 1] = sizes[k, 1, aw - 1] = CERTAIN
        return DenoiserOutput(logits=logits, size_logits=sizes)


@pytest.fixture(scope="module")
def case():
    tasks = load_tasks("aa1:eval", ids=[TASK])
    (task,) = tasks
    test_input, truth = task.test_inputs[0], tasks.solutions[TASK][0]
    assert test_input.shape == (3, 11) and truth.shape == (3, 8)
    near = []  # one cell wrong, in a colour of the grid: a corner, an inside cell, a last cell
    for r, c in ((0, 0), (1, 4), (2, 7)):
        grid = truth.copy()
        grid[r, c] = 5 if truth[r, c] != 5 else 2
        near.append(grid)
    return test_input, truth, near


def context(test_input, views):
    return dict(test_input=test_input, task_id=0, views=views, side=SIDE,
                device=torch.device("cpu"))  # fmt: skip


@pytest.mark.parametrize("view", VIEWS, ids=[f"d{a.dihedral}" for a in VIEWS])
def test_the_truth_scores_about_zero_and_beats_one_cell_wrong_under_each_view(case, view):
    test_input, truth, near = case
    model = CertainDenoiser(test_input, truth, VIEWS, max_size=SIDE)
    diffusion = DiscreteDiffusion()
    scores = view_scores(model, diffusion, [truth, *near], **context(test_input, [view]))
    assert scores.shape == (4, 1)
    assert abs(scores[0, 0]) < 1e-6  # colours and size both certain: log-prob ~ 0
    # one cell of 24 wrong costs about CERTAIN / 24 per noise level
    assert (scores[1:, 0] < -CERTAIN / 24 / 2).all(), scores[:, 0]
    ranked = poe_rank(
        model,
        diffusion,
        [Candidate(g, 3, 0.9) for g in near] + [Candidate(truth, 1, 0.1)],
        visit_weight=0.0,
        **context(test_input, [view]),
    )
    assert np.array_equal(ranked[0].grid, truth) and ranked[0].score == pytest.approx(0, abs=1e-6)


def test_over_all_eight_views_the_truth_wins_against_more_visited_near_misses(case):
    test_input, truth, near = case
    model = CertainDenoiser(test_input, truth, VIEWS, max_size=SIDE)
    candidates = [Candidate(g, 6, 0.9) for g in near] + [Candidate(truth, 1, 0.1)]
    ranked = poe_rank(model, DiscreteDiffusion(), candidates, **context(test_input, VIEWS))
    assert np.array_equal(ranked[0].grid, truth)
    assert ranked[0].score == pytest.approx(np.log(2), abs=1e-5)  # 8 views ~ 0, log(1 + 1 vote)
    per_view = view_scores(model, DiscreteDiffusion(), [truth, *near], **context(test_input, VIEWS))
    assert np.abs(per_view[0]).max() < 1e-6 and (per_view[1:] < -1.0).all()
