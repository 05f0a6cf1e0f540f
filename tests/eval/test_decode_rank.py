"""Confidence-ordered sampling, several draws per view, and product-of-experts ranking."""

import numpy as np
import pytest
import torch
from torch import nn

from arcdiff.data.augment import Augmentation
from arcdiff.data.tasks import Task, load_tasks
from arcdiff.diffusion.discrete import KERNELS, MASK, DiscreteDiffusion
from arcdiff.eval.decode import confidence_sample
from arcdiff.eval.predict import predict_tasks
from arcdiff.eval.rank import poe_rank, ranker_for, view_scores
from arcdiff.eval.sample import sample, size_mask
from arcdiff.eval.samplers import sampler_for
from arcdiff.eval.score import TestPrediction, score_split
from arcdiff.eval.vote import Candidate, top2
from arcdiff.model.denoiser import Denoiser, DenoiserOutput
from tests.eval.test_sample_vote_score import OracleDenoiser, colour_closed_tasks


class AnswerDenoiser(nn.Module):
    """Predicts a fixed answer canvas whatever it is shown, more sure of some cells than others
    (cell (r, c) has logit margin (1 + r * S + c) / 5), and records every canvas it sees."""

    self_condition = False

    def __init__(self, answer, sizes):
        super().__init__()
        self.answer, self.sizes = answer, sizes  # (B, S, S) colours, (B, 2)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, inputs, noisy, logsnr, task, dihedral_id, sc_logits=None, valid=None):
        self.seen.append(noisy.clone())
        b, s, _ = inputs.shape
        margin = (1.0 + torch.arange(s * s, dtype=torch.float32).view(1, s, s, 1)) / 5
        logits = torch.nn.functional.one_hot(self.answer, 10).float() * margin
        sizes = torch.full((b, 2, s), -50.0)
        sizes[torch.arange(b), 0, self.sizes[:, 0] - 1] = 50.0
        sizes[torch.arange(b), 1, self.sizes[:, 1] - 1] = 50.0
        return DenoiserOutput(logits=logits, size_logits=sizes)


class FickleDenoiser(AnswerDenoiser):
    """Random logits, new at every call (from its own seeded generator)."""

    def __init__(self, answer, sizes):
        super().__init__(answer, sizes)
        self.rng = torch.Generator().manual_seed(1)

    def forward(self, inputs, noisy, logsnr, task, dihedral_id, sc_logits=None, valid=None):
        out = super().forward(inputs, noisy, logsnr, task, dihedral_id)
        logits = 3.0 * torch.randn(out.logits.shape, generator=self.rng)
        return DenoiserOutput(logits=logits, size_logits=out.size_logits)


def toy_batch(b=3, s=5, seed=0):
    rng = torch.Generator().manual_seed(seed)
    answer = torch.randint(0, 10, (b, s, s), generator=rng)
    sizes = torch.tensor([[5, 5], [2, 3], [4, 1]])[:b]
    zeros = torch.zeros(b, dtype=torch.long)
    return answer, sizes, torch.randint(0, 10, (b, s, s), generator=rng), zeros


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("num_steps", [1, 4, 16])
@pytest.mark.parametrize("remask", [False, True])
def test_the_confidence_sampler_reaches_a_known_answer(kernel, num_steps, remask):
    answer, sizes, inputs, zeros = toy_batch()
    model = AnswerDenoiser(answer, sizes)
    out = confidence_sample(
        model, DiscreteDiffusion(kernel=KERNELS[kernel]), inputs, zeros, zeros, num_steps=num_steps,
        remask=remask, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    inside = size_mask(sizes, 5)
    assert torch.equal(out.sizes, sizes)  # read off the size head at the first step
    assert torch.equal(out.tokens[inside], answer[inside]) and (out.tokens[~inside] == 10).all()
    assert len(model.seen) == num_steps


@pytest.mark.parametrize("kernel", KERNELS)
def test_cells_are_decided_most_confident_first_on_the_diffusion_schedule(kernel):
    answer, sizes, inputs, zeros = toy_batch(b=1)
    model = AnswerDenoiser(answer, sizes)
    diffusion = DiscreteDiffusion(kernel=KERNELS[kernel])
    confidence_sample(model, diffusion, inputs, zeros, zeros, num_steps=8)
    # after the first step (the canvas the second call sees) the decided cells are the most
    # confident ones: the last cells in raster order, as many as alpha_bar of the next step says
    steps = torch.linspace(127, 0, 8, dtype=torch.float64).round().long()
    for call in range(1, 8):
        decided = (model.seen[call] == answer)[0].flatten()
        n = int(round(25 * diffusion.alpha_bar(steps[call]).item()))
        if diffusion.kernel.mask_token is not None:
            assert int((model.seen[call] != MASK).sum()) == n
            assert decided[25 - n :].all() and not decided[: 25 - n].any()
        else:  # re-noised cells may hit the answer by chance; the decided ones always do
            assert decided[25 - n :].all()


def test_decided_cells_never_change_without_remasking():
    answer, sizes, inputs, zeros = toy_batch()
    for remask, expect_change in ((False, False), (True, True)):
        model = FickleDenoiser(answer, sizes)
        absorbing = DiscreteDiffusion(kernel=KERNELS["absorbing"])
        out = confidence_sample(
            model, absorbing, inputs, zeros, zeros, num_steps=12,
            remask=remask,
        )  # fmt: skip
        canvases = [*model.seen[1:], out.tokens]
        changed = False
        for before, after in zip(canvases, canvases[1:], strict=False):
            unmasked = (before != MASK) & size_mask(sizes, 5)
            changed |= bool((after[unmasked] != before[unmasked]).any())
        assert changed == expect_change


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fixed", [False, True])
def test_one_step_is_the_one_shot_argmax(kernel, fixed):
    torch.manual_seed(0)
    model = Denoiser(num_tasks=1, max_size=6, d_model=32, n_heads=2, n_layers=1)
    inputs = torch.randint(0, 10, (4, 6, 6))
    zeros = torch.zeros(4, dtype=torch.long)
    sizes = torch.tensor([[1, 6], [4, 2], [6, 6], [3, 3]]) if fixed else None
    diffusion = DiscreteDiffusion(kernel=KERNELS[kernel])
    runs = [
        f(model, diffusion, inputs, zeros, zeros, num_steps=1, sizes=sizes,
          generator=torch.Generator().manual_seed(3))
        for f in (sample, confidence_sample)
    ]  # fmt: skip
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert torch.equal(runs[0].confidence, runs[1].confidence)


def test_draws_are_deterministic_given_the_seed_and_differ_across_seeds():
    torch.manual_seed(0)
    model = Denoiser(num_tasks=1, max_size=6, d_model=32, n_heads=2, n_layers=1)
    inputs = torch.randint(0, 10, (4, 6, 6))
    zeros = torch.zeros(4, dtype=torch.long)
    sizes = torch.tensor([[5, 6]] * 4)
    for kernel in KERNELS:
        draws = [
            confidence_sample(
                model, DiscreteDiffusion(kernel=KERNELS[kernel]), inputs, zeros, zeros, num_steps=4,
                temperature=1.0, sizes=sizes, generator=torch.Generator().manual_seed(seed),
            ).tokens
            for seed in (5, 5, 6)
        ]  # fmt: skip
        assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_samples_are_batched_with_the_views_and_all_voted():
    tasks = load_tasks("aa1:eval", max_size=10, limit=2)
    index = {t.id: k for k, t in enumerate(tasks)}
    torch.manual_seed(0)
    model = Denoiser(
        num_tasks=2, max_size=10, d_model=32, n_heads=2, n_layers=1, self_condition=False
    )
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    tests = sum(len(t.test_inputs) for t in tasks)
    draw = sampler_for("confidence", temperature=1.0)
    for samples in (1, 3):
        batches.clear()
        predictions = predict_tasks(
            model, DiscreteDiffusion(), tasks.tasks, index, num_steps=2, num_augs=4,
            samples=samples, draw=draw, size_vote=False,
        )  # fmt: skip
        assert len(batches) == 2 and sum(batches) == 2 * tests * 4 * samples  # one batch a step
        votes = [sum(c.votes for c in p.candidates) for ps in predictions.values() for p in ps]
        assert votes == [4 * samples] * tests


# ---------------------------------------------------------------------------------------------
# product-of-experts ranking


def oracle_setup():
    tasks, chosen = colour_closed_tasks(limit=3)
    pairs = [
        (i, o) for t in chosen for i, o in zip(t.test_inputs, tasks.solutions[t.id], strict=True)
    ]
    return tasks, chosen, OracleDenoiser(pairs, max_size=10)


def views(n=4, seed=0):
    rng = np.random.default_rng(seed)
    perms = [np.concatenate([[0], rng.permutation(9) + 1]) for _ in range(n)]
    return [Augmentation(k % 8, perms[k]) for k in range(n)]


def test_the_product_of_experts_prefers_what_every_view_finds_likely():
    tasks, chosen, model = oracle_setup()
    task = chosen[0]
    truth = tasks.solutions[task.id][0]
    wrong = (truth + 1) % 10
    context = dict(test_input=task.test_inputs[0], task_id=0, views=views(), side=10,
                   device=torch.device("cpu"))  # fmt: skip
    ranked = [Candidate(wrong, 5, 0.9), Candidate(truth, 1, 0.2)]
    first = poe_rank(model, DiscreteDiffusion(), ranked, visit_weight=0.0, **context)
    assert np.array_equal(first[0].grid, truth) and first[0].score > first[1].score
    # a large enough visit bonus hands it back to the most visited candidate
    counted = poe_rank(model, DiscreteDiffusion(), ranked, visit_weight=1e4, **context)
    assert np.array_equal(counted[0].grid, wrong)


@pytest.mark.parametrize("kernel", KERNELS)
def test_view_scores_are_deterministic_and_independent_of_the_other_candidates(kernel):
    torch.manual_seed(0)
    model = Denoiser(num_tasks=1, max_size=6, d_model=32, n_heads=2, n_layers=1)
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, shape).astype(np.uint8) for shape in ((3, 4), (3, 4), (2, 2))]
    context = dict(test_input=rng.integers(0, 10, (3, 4)).astype(np.uint8), task_id=0,
                   views=views(3), side=6, device=torch.device("cpu"))  # fmt: skip
    diffusion = DiscreteDiffusion(kernel=KERNELS[kernel])
    together = view_scores(model, diffusion, grids, **context)
    assert together.shape == (3, 3) and np.isfinite(together).all() and (together < 0).all()
    assert np.array_equal(together, view_scores(model, diffusion, grids, **context))
    alone = view_scores(model, diffusion, grids[1:2], **context, batch_size=2)
    assert np.allclose(alone[0], together[1], atol=1e-5)


@pytest.mark.parametrize("distinct", [1, 2])
def test_pass2_equals_the_oracle_with_one_or_two_distinct_candidates(distinct):
    torch.manual_seed(0)
    model = Denoiser(num_tasks=1, max_size=6, d_model=32, n_heads=2, n_layers=1)
    rng = np.random.default_rng(1)
    grids = [rng.integers(0, 10, (3, 3)).astype(np.uint8) for _ in range(distinct)]
    candidates = [Candidate(g, votes, 0.5) for g, votes in zip(grids, (3, 5), strict=False)]
    context = dict(test_input=grids[0], task_id=0, views=views(4), side=6,
                   device=torch.device("cpu"))  # fmt: skip
    ranked = ranker_for("poe")(model, DiscreteDiffusion(), candidates, **context)
    assert len(ranked) == distinct
    attempts = top2(ranked)
    task = Task("t", (), (grids[0],), "test")
    for truth in grids:  # whichever candidate is the truth, pass@2 finds it
        pred = TestPrediction(tuple(ranked), *attempts)
        summary = score_split({"t": [pred]}, [task], {"t": (truth,)})["summary"]
        assert summary["pass@2"] == summary["oracle"] == 1.0


def test_an_oracle_denoiser_with_the_new_rules_scores_100():
    tasks, chosen, model = oracle_setup()
    index = {t.id: k for k, t in enumerate(chosen)}
    predictions = predict_tasks(
        model, DiscreteDiffusion(), chosen, index, num_steps=2, num_augs=4, samples=2,
        draw=sampler_for("confidence", temperature=1.0), rank=ranker_for("poe"),
    )  # fmt: skip
    summary = score_split(predictions, chosen, tasks.solutions)["summary"]
    assert summary["pass@2"] == summary["oracle"] == 1.0
    assert all(c.score is not None for ps in predictions.values() for p in ps for c in p.candidates)


def test_only_the_top_most_visited_candidates_are_scored():
    tasks, chosen, model = oracle_setup()
    task = chosen[0]
    truth = tasks.solutions[task.id][0]
    context = dict(test_input=task.test_inputs[0], task_id=0, views=views(), side=10,
                   device=torch.device("cpu"))  # fmt: skip
    ranked = [Candidate((truth + k) % 10, 5 - k, 0.5) for k in (1, 2)] + [Candidate(truth, 1, 0.9)]
    capped = poe_rank(model, DiscreteDiffusion(), ranked, top=2, visit_weight=0.0, **context)
    assert capped[2] is ranked[2] and capped[2].score is None  # unscored, last as voted
    assert all(c.score is not None for c in capped[:2])
    full = poe_rank(model, DiscreteDiffusion(), ranked, top=3, visit_weight=0.0, **context)
    assert np.array_equal(full[0].grid, truth)
