import json

import numpy as np
import pytest
import torch
from torch import nn

from arcdiff.data.augment import DIHEDRAL_BITS, dihedral
from arcdiff.data.tasks import Pair, Task, load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.decode import sampler_for
from arcdiff.eval.rank import ranker_for
from arcdiff.eval.sample import (
    canvas_side,
    demo_size_prior,
    predict_tasks,
    sample,
    size_mask,
    size_votes,
)
from arcdiff.eval.score import TestPrediction, predictions_json, score_split, submission
from arcdiff.eval.vote import Candidate, top2, vote
from arcdiff.model.denoiser import DenoiserOutput
from tests.conftest import SMALL_TASKS


def g(*rows):
    return np.array(rows, dtype=np.uint8)


A, B, C = g([1, 2]), g([2, 1]), g([3], [3])


def test_vote_ranks_by_count_then_confidence_and_merges_duplicates():
    ranked = vote([A, B, A, C, B, B], [0.9, 0.5, 0.8, 0.99, 0.6, 0.7])
    assert [c.votes for c in ranked] == [3, 2, 1]
    assert np.array_equal(ranked[0].grid, B) and ranked[0].confidence == pytest.approx(0.6)
    assert np.array_equal(ranked[1].grid, A) and ranked[1].confidence == pytest.approx(0.85)
    first, second = top2(ranked)
    assert np.array_equal(first, B) and np.array_equal(second, A)


def test_ties_in_votes_go_to_the_more_confident_then_the_first_seen():
    ranked = vote([A, B], [0.4, 0.7])
    assert np.array_equal(ranked[0].grid, B)
    ranked = vote([A, B], [0.5, 0.5])
    assert np.array_equal(ranked[0].grid, A)


def test_grids_differing_only_in_shape_are_distinct_candidates():
    flat, tall = g([3, 3]), g([3], [3])
    assert len(vote([flat, tall], [0.5, 0.5])) == 2


def test_a_single_candidate_fills_both_attempts():
    first, second = top2(vote([C, C, C], [0.1, 0.2, 0.3]))
    assert np.array_equal(first, C) and np.array_equal(second, C)


def pred(*candidates):
    cands = tuple(Candidate(grid, votes, 0.5) for grid, votes in candidates)
    first, second = top2(cands)
    return TestPrediction(cands, first, second)


def test_scores_are_fractional_over_test_inputs_and_averaged_over_tasks():
    tasks = load_tasks("aa1:eval", limit=40)
    two = next(t for t in tasks if len(t.test_inputs) == 2)
    one = next(t for t in tasks if len(t.test_inputs) == 1)
    truth2, truth1 = tasks.solutions[two.id], tasks.solutions[one.id]
    wrong = g([0])
    predictions = {
        # test 0: truth second (pass@2, not pass@1); test 1: truth only third (oracle only)
        two.id: [pred((wrong, 3), (truth2[0], 2)), pred((wrong, 3), (g([9]), 2), (truth2[1], 1))],
        one.id: [pred((truth1[0], 5))],
    }
    scores = score_split(predictions, [two, one], tasks.solutions)
    per_task, summary = scores["per_task"], scores["summary"]
    assert per_task[two.id]["pass1"] == 0.0 and per_task[two.id]["pass2"] == 0.5
    assert per_task[two.id]["oracle"] == 1.0 and per_task[one.id]["pass1"] == 1.0
    assert summary["pass@2"] == pytest.approx(0.75) and summary["pass@1"] == pytest.approx(0.5)
    assert summary["oracle"] == 1.0 and summary["tasks_solved"] == 1
    out = submission(predictions)
    assert list(out[two.id][1]) == ["attempt_1", "attempt_2"] and len(out[two.id]) == 2
    assert out[one.id][0]["attempt_1"] == truth1[0].tolist() == out[one.id][0]["attempt_2"]
    json.dumps(out)  # plain JSON types only


def test_cell_accuracy_and_copy_baseline():
    tasks = load_tasks("aa1:eval", ids=["0becf7df"])  # same-shape task
    (task,) = tasks
    truth, test_input = tasks.solutions[task.id][0], task.test_inputs[0]
    assert truth.shape == test_input.shape
    half = truth.copy()
    half[0, :] = (half[0, :] + 1) % 10
    summary = score_split({task.id: [pred((half, 1))]}, [task], tasks.solutions)["summary"]
    assert summary["size_accuracy"] == 1.0
    assert summary["cell_accuracy"] == pytest.approx(1 - truth.shape[1] / truth.size)
    assert summary["copy_baseline_same_shape"] == pytest.approx(float((test_input == truth).mean()))


class OracleDenoiser(nn.Module):
    """Returns each test input's true output through any augmentation.

    It finds which test input (and colour permutation) it is looking at by matching the
    augmented canvas against every test input under the given dihedral transform; this works
    for tasks whose output colours all appear in the input.
    """

    self_condition = False

    def __init__(self, pairs, max_size, noise=False):
        super().__init__()
        self.pairs, self.max_size, self.noise = pairs, max_size, noise
        self.dummy = nn.Parameter(torch.zeros(1))
        self.sides = set()  # canvas sides it was shown

    def forward(self, inputs, noisy, logsnr, task, dihedral_id, sc_logits=None, valid=None):
        b, s, _ = inputs.shape
        self.sides.add(s)
        logits = torch.zeros(b, s, s, 10)
        sizes = torch.zeros(b, 2, self.max_size)
        for k in range(b):
            canvas = inputs[k].numpy()
            target = self._answer(canvas, int(dihedral_id[k]))
            if self.noise or target is None:
                target = np.random.default_rng(k).integers(0, 10, (3, 4))
            h, w = target.shape
            logits[k, :h, :w] = (
                torch.nn.functional.one_hot(torch.from_numpy(target).long(), 10) * 50.0
            )
            sizes[k, 0, h - 1] = sizes[k, 1, w - 1] = 50.0
        return DenoiserOutput(logits=logits, size_logits=sizes)

    def _answer(self, canvas, d):
        h, w = int((canvas[:, 0] != 10).sum()), int((canvas[0] != 10).sum())
        for test_input, truth in self.pairs:
            seen = dihedral(test_input, d)
            if seen.shape != (h, w):
                continue
            perm = colour_map(seen, canvas[:h, :w])
            if perm is not None and set(np.unique(truth)) <= set(np.unique(test_input)):
                return perm[dihedral(truth, d)]
        return None


def colour_map(before, after):
    """The injective colour map p with p[before] == after, or None."""
    perm = np.full(10, -1)
    for a, b in zip(before.ravel(), after.ravel(), strict=True):
        if perm[a] == -1:
            perm[a] = b
        elif perm[a] != b:
            return None
    used = perm[perm >= 0]
    return perm if len(set(used.tolist())) == len(used) else None


def colour_closed_tasks(limit=6):
    tasks = load_tasks("aa1:eval", max_size=10)
    chosen = [
        t
        for t in tasks
        if all(
            set(np.unique(o)) <= set(np.unique(i))
            for i, o in zip(t.test_inputs, tasks.solutions[t.id], strict=True)
        )
    ][:limit]
    return tasks, chosen


@pytest.mark.parametrize(
    "maj,crop,size_vote",
    [(True, False, True), (False, False, True), (True, True, True), (True, False, False)],
)
def test_an_oracle_denoiser_scores_100_and_noise_scores_0(maj, crop, size_vote):
    tasks, chosen = colour_closed_tasks()
    pairs = [
        (i, o) for t in chosen for i, o in zip(t.test_inputs, tasks.solutions[t.id], strict=True)
    ]
    index = {t.id: k for k, t in enumerate(chosen)}
    for noise, expected in ((False, 1.0), (True, 0.0)):
        model = OracleDenoiser(pairs, max_size=10, noise=noise)
        predictions = predict_tasks(
            model,
            DiscreteDiffusion(),
            chosen,
            index,
            num_steps=2,
            maj=maj,
            num_augs=8,
            crop=crop,
            size_vote=size_vote,
        )
        summary = score_split(predictions, chosen, tasks.solutions)["summary"]
        assert summary["pass@2"] == expected and summary["oracle"] == expected
        # cropped canvases: each batch on its task's side, smaller than the full canvas
        assert model.sides == (
            {canvas_side(t, i, 10) for t in chosen for i in t.test_inputs} if crop else {10}
        )
        if maj and not noise:
            candidate = predictions[chosen[0].id][0].candidates[0]
            assert candidate.votes == 8  # every augmentation, inverted, agrees


NEW_RULES = {  # confidence-ordered draws, several per view, product-of-experts ranking
    "samples": 2,
    "draw": sampler_for("confidence", temperature=1.0, remask=True),
    "rank": ranker_for("poe"),
}


@pytest.mark.parametrize("rules", [{}, NEW_RULES], ids=["vote", "confidence-poe"])
@pytest.mark.parametrize("kernel", ["uniform", "absorbing"])
def test_the_sampler_never_sees_test_outputs(tmp_path, rules, kernel):
    """Two task sets that differ only in their test outputs give identical predictions, with
    the plain vote and with the confidence sampler, several draws and the ranking."""
    source = load_tasks("aa1:eval", max_size=10, limit=3)
    for variant in ("real", "fake"):
        folder = tmp_path / variant
        folder.mkdir()
        for task in source:
            outputs = source.solutions[task.id] if variant == "real" else [g([7])] * 9
            raw = {
                "train": [
                    {"input": p.input.tolist(), "output": p.output.tolist()} for p in task.demos
                ],
                "test": [
                    {"input": i.tolist(), "output": o.tolist()}
                    for i, o in zip(task.test_inputs, outputs, strict=False)
                ],
            }
            (folder / f"{task.id}.json").write_text(json.dumps(raw))
    torch.manual_seed(0)
    from arcdiff.model.denoiser import Denoiser

    model = Denoiser(num_tasks=3, max_size=10, d_model=32, n_heads=2, n_layers=1)
    results = []
    for variant in ("real", "fake"):
        tasks = load_tasks(str(tmp_path / variant))
        index = {t.id: k for k, t in enumerate(tasks)}
        diffusion = DiscreteDiffusion(kernel=kernel)
        preds = predict_tasks(model, diffusion, tasks.tasks, index, num_steps=2, **rules)
        results.append(predictions_json(preds))
    assert results[0] == results[1]


def test_tasks_the_model_was_not_trained_on_are_a_data_error():
    from arcdiff.errors import DataError
    from arcdiff.model.denoiser import Denoiser

    tasks = load_tasks("aa1:eval", max_size=10, limit=2)
    model = Denoiser(num_tasks=1, max_size=10, d_model=16, n_heads=2, n_layers=1)
    new_task = rf"have no embedding in this model \(it never trained on them: {tasks.ids[1]}\)"
    with pytest.raises(DataError, match=new_task + ".*arcdiff lora --run RUN --tasks SOURCE"):
        predict_tasks(model, DiscreteDiffusion(), tasks.tasks, {tasks.ids[0]: 0}, num_steps=1)


def test_canvas_side_covers_demonstrations_and_scaled_test_inputs():
    def task(pairs, tests):
        demos = tuple(Pair(g(*i), g(*o)) for i, o in pairs)
        return Task("t", demos, tuple(g(*t) for t in tests), "test")

    same = task([([[1, 2]], [[2, 1]]), ([[1, 2, 3]] * 3, [[3, 2, 1]] * 3)], [[[1] * 4] * 2])
    assert canvas_side(same, same.test_inputs[0], 10) == 4  # test input wider than any demo
    triple = task([([[1]], [[1] * 3] * 3), ([[1, 2]] * 2, [[1] * 6] * 6)], [[[1] * 3] * 3])
    assert canvas_side(triple, triple.test_inputs[0], 30) == 9  # outputs 3x the input
    assert canvas_side(triple, triple.test_inputs[0], 8) == 8  # never beyond the canvas


def test_size_votes_agree_in_the_original_frame():
    s = 6
    # one test input, 8 views; its true output is 2x5. Views that transpose see 5x2.
    dihedrals = np.arange(8)
    swap = DIHEDRAL_BITS[dihedrals, 0].astype(bool)
    logp = np.full((8, 2, s), -10.0)
    for b in range(8):
        h, w = (5, 2) if swap[b] else (2, 5)
        logp[b, 0, h - 1] = logp[b, 1, w - 1] = 0.0
    logp[3] = -10.0  # one confused view votes 3x3
    logp[3, :, 2] = 0.0
    sizes = size_votes(logp, dihedrals, np.zeros(8, dtype=np.int64))
    expected = np.where(swap[:, None], [[5, 2]], [[2, 5]])
    assert (sizes == expected).all()  # the confused view is outvoted, in its own frame
    # two groups vote separately
    both = size_votes(
        np.concatenate([logp, logp[:, ::-1]]), np.tile(dihedrals, 2), np.repeat([0, 1], 8)
    )
    assert (both[:8] == expected).all() and (both[8:] == expected[:, ::-1]).all()


def test_fixed_sizes_are_used_at_every_step():
    from arcdiff.diffusion.discrete import MASK
    from arcdiff.model.denoiser import Denoiser

    torch.manual_seed(0)
    model = Denoiser(num_tasks=1, max_size=6, d_model=32, n_heads=2, n_layers=1)
    seen = []  # the noisy canvas of every forward pass
    model.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    inputs = torch.randint(0, 10, (3, 6, 6))
    zeros = torch.zeros(3, dtype=torch.long)
    sizes = torch.tensor([[1, 6], [4, 2], [6, 6]])
    absorbing = DiscreteDiffusion(kernel="absorbing")
    out = sample(model, absorbing, inputs, zeros, zeros, num_steps=3, sizes=sizes)
    assert torch.equal(out.sizes, sizes)
    inside = size_mask(sizes, 6)
    assert len(seen) == 2 * 3  # two passes per step
    for canvas in seen[2:]:  # after each step: the argmax inside the fixed size, MASK outside
        assert (canvas[~inside] == MASK).all() and (canvas[inside] < MASK).all()
    assert torch.equal(out.tokens != 10, inside)


def test_hidden_test_outputs_are_predicted_but_not_scored():
    tasks = load_tasks("aa1:train", ids=["0d3d703e", "25ff71a9"])
    a, b = tasks.tasks
    truth = {t.id: tasks.solutions[t.id] for t in tasks}
    assert len(b.test_inputs) == 2  # one hidden, one known
    predictions = {
        a.id: [TestPrediction((), truth[a.id][0], truth[a.id][0])],
        b.id: [TestPrediction((), g([0]), g([0])), TestPrediction((), g([0]), truth[b.id][1])],
    }
    hidden = {a.id: (None,), b.id: (truth[b.id][0], truth[b.id][1])}
    scores = score_split(predictions, tasks.tasks, hidden)
    assert set(scores["per_task"]) == {b.id}  # a task with every output hidden is not scored
    assert scores["per_task"][b.id]["pass2"] == 0.5
    summary = scores["summary"]
    assert (summary["tasks"], summary["tasks_scored"], summary["test_inputs_scored"]) == (2, 1, 2)
    assert summary["pass@2"] == 0.5 and summary["pass@1"] == 0.0
    nothing = score_split(predictions, tasks.tasks, {a.id: (None,), b.id: (None, None)})
    assert nothing["per_task"] == {} and nothing["summary"]["pass@2"] is None
    assert submission(predictions)[b.id][1]["attempt_2"] == truth[b.id][1].tolist()


def test_without_the_vote_the_second_attempt_is_the_runner_up():
    from arcdiff.model.denoiser import Denoiser

    tasks = load_tasks("aa1:train", ids=SMALL_TASKS)
    torch.manual_seed(0)
    model = Denoiser(num_tasks=len(tasks), max_size=5, d_model=32, n_heads=2, n_layers=1)
    index = {t.id: k for k, t in enumerate(tasks)}
    predictions = predict_tasks(model, DiscreteDiffusion(), tasks.tasks, index, maj=False)
    for preds in predictions.values():
        for p in preds:
            first, second = p.attempt_1, p.attempt_2
            assert first.shape == second.shape and (first != second).sum() == 1
            assert [c.votes for c in p.candidates] == [1, 0]
            assert p.candidates[0].confidence > p.candidates[1].confidence


def test_demo_size_prior_names_the_lengths_the_demonstrations_obey():
    def task(pairs):
        demos = tuple(Pair(np.zeros(i, np.uint8), np.zeros(o, np.uint8)) for i, o in pairs)
        return Task("t", demos, (), "test")

    def argmax(prior):
        return tuple(int(v) + 1 for v in prior.argmax(-1))

    same = task([((2, 3), (2, 3)), ((4, 1), (4, 1))])
    assert argmax(demo_size_prior(same, np.zeros((5, 2)), 10)) == (5, 2)
    transposed = task([((2, 3), (3, 2)), ((4, 1), (1, 4))])
    assert argmax(demo_size_prior(transposed, np.zeros((5, 2)), 10)) == (2, 5)
    fixed = task([((2, 3), (3, 5)), ((4, 1), (3, 5)), ((6, 6), (3, 5))])
    assert argmax(demo_size_prior(fixed, np.zeros((9, 9)), 10)) == (3, 5)
    scaled = task([((2, 3), (6, 9)), ((1, 1), (3, 3))])  # three times the input
    assert argmax(demo_size_prior(scaled, np.zeros((3, 2)), 10)) == (9, 6)
    halved = task([((4, 6), (2, 3)), ((2, 2), (1, 1))])
    assert argmax(demo_size_prior(halved, np.zeros((8, 4)), 10)) == (4, 2)
    # a prior, not a rule: every length keeps some mass, and it is a distribution
    prior = np.exp(demo_size_prior(fixed, np.zeros((9, 9)), 10))
    assert np.allclose(prior.sum(-1), 1.0) and (prior > 0).all()
    # no rule fits (outputs vary with nothing the rules know), or the named length is off the
    # canvas: a flat prior
    free = task([((2, 2), (1, 5)), ((2, 2), (4, 2))])
    assert np.allclose(demo_size_prior(free, np.zeros((2, 2)), 10), np.log(0.1))
    assert np.allclose(demo_size_prior(scaled, np.zeros((5, 5)), 10), np.log(0.1))


def test_the_demo_prior_overrules_views_that_agree_on_a_wrong_size():
    s = 6
    dihedrals = np.zeros(4, dtype=np.int64)
    logp = np.log(np.full((4, 2, s), 0.02))
    logp[:, :, 2] = np.log(0.9)  # every view says 3x3
    prior = np.log(np.full((1, 2, s), 0.01))
    prior[0, 0, 2], prior[0, 1, 4] = np.log(0.95), np.log(0.95)  # the demonstrations say 3x5
    groups = np.zeros(4, dtype=np.int64)
    assert (size_votes(logp, dihedrals, groups) == [3, 3]).all()
    assert (size_votes(logp, dihedrals, groups, prior) == [3, 5]).all()
