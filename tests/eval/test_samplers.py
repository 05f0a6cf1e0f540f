"""The checks every registered sampler passes, whatever its algorithm (the shared scheduler
test of diffusers): a sampler is tested by registering it in arcdiff.eval.samplers.SAMPLERS."""

import typing

import pytest
import torch
from torch import nn

from arcdiff.config import EvalConfig
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import KERNELS, DiscreteDiffusion
from arcdiff.eval.sample import Samples, size_mask
from arcdiff.eval.samplers import SAMPLERS, Sampler, sampler_for
from arcdiff.model.denoiser import Denoiser, DenoiserOutput

S = 6
# each registered sampler with its options at their defaults and at their most stochastic
OPTIONS = {
    "plain": {"temperature": 0.0, "remask": False},
    "hot": {"temperature": 1.0, "remask": True},
}


class KnownDenoiser(nn.Module):
    """Predicts task t's answer grid and size whatever canvas it is shown: logits peaked on
    the answer's colours (margin 20 plus a little per cell, so cells differ in confidence)
    and on its size. Self-conditioned, so two-pass samplers call it twice a step."""

    self_condition = True

    def __init__(self, answers: torch.Tensor, sizes: torch.Tensor):
        super().__init__()
        self.answers, self.sizes = answers, sizes  # (N, S, S) colours, (N, 2) as (h, w)
        self.max_size = answers.shape[-1]
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, noisy, logsnr, task, dihedral_id, sc_logits=None, valid=None):
        b, s, _ = inputs.shape
        margin = 20.0 + torch.arange(s * s, dtype=torch.float32).view(1, s, s, 1) / 10
        logits = nn.functional.one_hot(self.answers[task], 10).float() * margin
        size_logits = torch.full((b, 2, s), -50.0)
        rows = torch.arange(b)
        size_logits[rows, 0, self.sizes[task, 0] - 1] = 50.0
        size_logits[rows, 1, self.sizes[task, 1] - 1] = 50.0
        return DenoiserOutput(logits=logits, size_logits=size_logits)


def known_batch(b: int = 4):
    """A KnownDenoiser for b tasks (one per row, each its own answer and size) and its inputs."""
    rng = torch.Generator().manual_seed(0)
    answers = torch.randint(0, 10, (b, S, S), generator=rng)
    sizes = torch.tensor([[6, 6], [2, 3], [5, 1], [3, 4]])[:b]
    inputs = torch.randint(0, 10, (b, S, S), generator=rng)
    return KnownDenoiser(answers, sizes), inputs, torch.arange(b), torch.arange(b) % 8


def run(draw: Sampler, model, kernel: str, inputs, task, dihedral, sizes=None, seed=0) -> Samples:
    return draw(
        model, DiscreteDiffusion(kernel=KERNELS[kernel]), inputs, task, dihedral,
        num_steps=8, generator=torch.Generator().manual_seed(seed), sizes=sizes,
    )  # fmt: skip


def test_the_config_offers_exactly_the_registered_samplers():
    names = typing.get_args(typing.get_type_hints(EvalConfig)["sampler"])
    assert names == tuple(SAMPLERS)


def test_an_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler 'greedy'"):
        sampler_for("greedy")


@pytest.mark.parametrize("options", OPTIONS.values(), ids=list(OPTIONS))
@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("kernel", KERNELS)
class TestEverySampler:
    @pytest.fixture
    def draw(self, name, options) -> Sampler:
        return sampler_for(name, **options)

    @pytest.mark.parametrize("fixed", [False, True])
    def test_it_reaches_the_known_grid_and_size(self, draw, kernel, fixed):
        model, inputs, task, dihedral = known_batch()
        out = run(draw, model, kernel, inputs, task, dihedral, model.sizes if fixed else None)
        inside = size_mask(model.sizes, S)
        assert torch.equal(out.sizes, model.sizes)
        assert torch.equal(out.tokens[inside], model.answers[inside])
        assert (out.tokens[~inside] == PAD).all() and (out.runner_up[~inside] == PAD).all()
        # the runner-up swaps the least certain cell (the smallest margin: the first) only
        assert torch.equal((out.runner_up != out.tokens).sum(dim=(1, 2)), torch.ones(4).long())
        assert (out.runner_up[:, 0, 0] != out.tokens[:, 0, 0]).all()
        assert (out.confidence > 0.99).all() and (out.runner_up_confidence < out.confidence).all()

    def test_valid_cells_hold_colours_and_the_rest_pad(self, draw, kernel):
        torch.manual_seed(0)
        model = Denoiser(num_tasks=2, max_size=S, d_model=32, n_heads=2, n_layers=1)
        inputs = torch.randint(0, 10, (8, S, S))
        task, dihedral = torch.arange(8) % 2, torch.arange(8)
        out = run(draw, model, kernel, inputs, task, dihedral)
        assert ((out.sizes >= 1) & (out.sizes <= S)).all()
        inside = size_mask(out.sizes, S)
        for grid in (out.tokens, out.runner_up):
            assert (grid[inside] <= 9).all() and (grid[inside] >= 0).all()
            assert (grid[~inside] == PAD).all()
        assert ((out.confidence >= 0.1 - 1e-6) & (out.confidence <= 1 + 1e-6)).all()

    def test_one_seed_gives_one_sample(self, draw, kernel):
        torch.manual_seed(0)
        model = Denoiser(num_tasks=1, max_size=S, d_model=32, n_heads=2, n_layers=1)
        inputs, zeros = torch.randint(0, 10, (4, S, S)), torch.zeros(4, dtype=torch.long)
        first, again = (run(draw, model, kernel, inputs, zeros, zeros, seed=5) for _ in range(2))
        for field in Samples.__dataclass_fields__:
            assert torch.equal(getattr(first, field), getattr(again, field)), field

    @pytest.mark.parametrize("fixed", [False, True])
    def test_rows_do_not_depend_on_their_batch(self, draw, kernel, fixed):
        model, inputs, task, dihedral = known_batch()
        sizes = model.sizes if fixed else None
        whole = run(draw, model, kernel, inputs, task, dihedral, sizes)
        halves = [
            run(draw, model, kernel, inputs[rows], task[rows], dihedral[rows],
                None if sizes is None else sizes[rows], seed=7)
            for rows in (slice(0, 1), slice(1, 4))
        ]  # fmt: skip
        for field in Samples.__dataclass_fields__:
            split = torch.cat([getattr(half, field) for half in halves])
            assert torch.equal(getattr(whole, field), split), field
