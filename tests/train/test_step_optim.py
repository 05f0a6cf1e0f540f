"""The shared training step and optimiser pieces: exact small cases that a wrong edit breaks."""

import math

import pytest
import torch

from arcdiff.config import load_config
from arcdiff.data.dataset import stream_from_config
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import TrainingError
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.optim import ema_update, make_optimizer, warmup_cosine
from arcdiff.train.step import TrainStep
from tests.conftest import tiny_overrides


def test_warmup_cosine_at_its_corners():
    assert warmup_cosine(0, 4, 100) == 0.25 and warmup_cosine(3, 4, 100) == 1.0
    assert warmup_cosine(4, 4, 100) == 1.0 and warmup_cosine(100, 4, 100) == 0.0
    assert warmup_cosine(52, 4, 100) == pytest.approx(0.5)  # half-way down
    assert warmup_cosine(100, 4, 100, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(150, 4, 100, floor=0.1) == pytest.approx(0.1)  # the floor after it


def test_the_optimizer_decays_matrices_only_and_skips_what_it_is_told():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    kept = model[2].weight
    opt = make_optimizer(model, 1e-3, 0.1, torch.device("cpu"), no_decay=[kept])
    decay, rest = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(4, 3)] and decay["weight_decay"] == 0.1
    assert any(p is kept for p in rest["params"]) and rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_ema_update_is_the_lerp_it_says():
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(1.0)
        for p in model.parameters():
            p.fill_(3.0)
    ema_update(ema, model, 0.75)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in ema.parameters())


def tiny_step(**extra):
    cfg = load_config(None, tiny_overrides(**extra))
    torch.manual_seed(0)
    stream = stream_from_config(cfg.data)
    model = build_model(cfg, stream.num_tasks)
    opt = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay, torch.device("cpu"))
    step = TrainStep(
        model=model,
        diffusion=DiscreteDiffusion.from_config(cfg.diffusion),
        optimizer=opt,
        grad_clip=1.0,
        size_loss_weight=0.1,
        self_cond_prob=1.0,
    )
    return step, stream, model


def test_a_step_updates_the_weights_and_a_non_finite_loss_does_not():
    step, stream, model = tiny_step(model__self_condition=True)
    gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    before = [p.detach().clone() for p in model.parameters()]
    r = step(stream.sample, 8, gen, gen, 0, device=cpu)
    assert r.applied and r.self_cond and math.isfinite(r.loss) and r.grad_norm > 0
    assert set(r.parts) == {"colour_loss", "size_loss"}
    assert set(r.seconds) == {"data", "fwd_bwd", "optim"}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        model.task_embed.weight.fill_(float("nan"))  # every example reads its task's row
    frozen = [p.detach().clone() for p in model.parameters()]
    r = step(stream.sample, 8, gen, gen, 1, device=cpu, self_cond=False)
    assert not r.applied and not r.self_cond and not math.isfinite(r.loss)
    same = [
        torch.equal(a, b) or bool(a.isnan().all() and b.isnan().all())
        for a, b in zip(frozen, model.parameters(), strict=True)
    ]
    assert all(same)  # no update was applied


def test_a_compiled_forward_takes_the_same_step():
    """train.compile wraps the model in torch.compile, whose module has no truth value: the
    step must not ask for one (it did, and every compiled run failed at its first step)."""
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        step, stream, model = tiny_step()
        if compiled:  # dynamo's own tracing, without inductor's minutes of code generation
            step.forward = torch.compile(model, backend="eager")
        gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
        losses.append(step(stream.sample, 8, gen, gen, 0, device=cpu).loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_from_config_takes_every_setting_of_the_step_from_the_config():
    cfg = load_config(
        None,
        tiny_overrides(
            train__grad_clip=0.25,
            train__self_cond_prob=0.75,
            train__grad_accum=2,
            train__ema_decay=0.5,
            diffusion__size_loss_weight=0.3,
            diffusion__kernel="absorbing",
        ),
    )
    stream = stream_from_config(cfg.data)
    model = build_model(cfg, stream.num_tasks)
    opt = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay, torch.device("cpu"))
    step = TrainStep.from_config(cfg, model, opt, device=torch.device("cpu"))
    assert (step.grad_clip, step.self_cond_prob, step.grad_accum) == (0.25, 0.75, 2)
    assert (step.ema_decay, step.size_loss_weight) == (0.5, 0.3)
    assert step.diffusion.kernel.name == "absorbing"
    assert step.diffusion == DiscreteDiffusion.from_config(cfg.diffusion)
    assert step.no_sync is None and step.forward is None and step.scheduler is None
    with pytest.raises(TrainingError, match=r"lora.batch_size=\d+ is not divisible by train"):
        bad = load_config(None, tiny_overrides(train__grad_accum=3, lora__batch_size=16))
        TrainStep.from_config(
            bad, model, opt, device=torch.device("cpu"), batch_field="lora.batch_size"
        )
