"""train.optimizer="muon": which weights Muon takes, one schedule for both optimizers, learning
on real ARC tasks, and a resume that is bit-identical to a run never interrupted."""

import pytest
import torch
from torch import nn

from arcdiff.data.dataset import stream_from_config
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.muon import Combined
from arcdiff.train.optim import make_optimizer
from arcdiff.train.validate import validate
from tests.train.test_trainer import quiet_train, tiny

CPU = torch.device("cpu")
BLOCK_MATRICES = {"attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"}


class Wrapped(nn.Module):
    """Stands in for DDP: the model under ``.module``, every name prefixed by ``module.``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def names_of(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


@pytest.mark.parametrize("wrap", [False, True])
def test_muon_takes_the_block_matrices_and_adamw_everything_else(wrap):
    cfg = tiny(model__self_condition=True, model__n_layers=2)
    torch.manual_seed(0)
    model = build_model(cfg, 5)
    model.task_embed.weight.requires_grad_(False)  # a frozen weight goes to neither
    opt = make_optimizer(Wrapped(model) if wrap else model, 1e-3, 0.05, CPU, kind="muon")
    assert isinstance(opt, Combined)
    decay, rest, muon = opt.param_groups
    assert opt.optimizers["muon"].param_groups == [muon]
    assert opt.optimizers["adamw"].param_groups == [decay, rest]
    expected = {f"blocks.{i}.{leaf}" for i in range(2) for leaf in BLOCK_MATRICES}
    assert names_of(model, muon["params"]) == expected
    assert muon["lr"] == 0.02 and muon["weight_decay"] == 0.05
    assert muon["adjust_lr_fn"] == "original"
    decayed = names_of(model, decay["params"])
    assert "input_embed.weight" in decayed and "colour_head.weight" in decayed
    assert all(not n.startswith("blocks.") for n in decayed) and decay["weight_decay"] == 0.05
    assert all(p.ndim < 2 for p in rest["params"]) and rest["weight_decay"] == 0.0
    assert "sc_gate" in names_of(model, rest["params"]) and decay["lr"] == rest["lr"] == 1e-3
    every = [id(p) for g in (decay, rest, muon) for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(every) == len(set(every)) and set(every) == trainable  # each exactly once


def test_adamw_is_unchanged_when_muon_is_not_asked_for():
    model = build_model(tiny(), 5)
    opt = make_optimizer(model, 1e-3, 0.05, CPU)
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 2
    assert any(n.startswith("blocks.") for n in names_of(model, opt.param_groups[0]["params"]))


def schedule(model: nn.Module):
    opt = make_optimizer(model, 1e-3, 0.01, CPU, kind="muon", muon_lr=0.04)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)


def test_one_lambdalr_scales_each_group_from_its_own_base_lr_through_a_resume():
    torch.manual_seed(0)
    model = build_model(tiny(), 5)
    opt, scheduler = schedule(model)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [1e-3 / 8, 1e-3 / 8, 0.04 / 8]
    assert opt.optimizers["muon"].param_groups[0]["lr"] == 0.04 / 8  # what Muon reads
    assert scheduler.get_last_lr() == [1e-3 / 8, 1e-3 / 8, 0.04 / 8]
    assert len(opt.optimizers["muon"].state) == len(opt.param_groups[2]["params"])  # momenta
    saved, saved_schedule = opt.state_dict(), scheduler.state_dict()
    assert set(saved) == {"adamw", "muon"}
    again, again_scheduler = schedule(model)
    again.load_state_dict(saved)
    again_scheduler.load_state_dict(saved_schedule)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    again.step()
    again_scheduler.step()
    assert [g["lr"] for g in again.param_groups] == [1e-3 / 16, 1e-3 / 16, 0.04 / 16]
    assert again.optimizers["muon"].param_groups[0] is again.param_groups[2]
    assert [g["initial_lr"] for g in again.param_groups] == [1e-3, 1e-3, 0.04]


def test_muon_training_lowers_the_validation_loss_on_real_tasks(tmp_path):
    cfg = tiny(train__max_steps=30, train__eval_every=30, train__optimizer="muon")
    result = quiet_train(cfg, tmp_path / "run")
    stream = stream_from_config(cfg.data)
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    untrained = build_model(cfg, stream.num_tasks)
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    before = validate(untrained, stream.validation_batch(), diffusion, cfg, CPU)
    assert result.val["val_loss"] < before["val_loss"] - 0.1
    blocks = [n for n, _ in result.model.named_parameters() if n.startswith("blocks.")]
    moved = {
        n
        for n, p in result.model.named_parameters()
        if not torch.equal(p, untrained.get_parameter(n))
    }
    assert set(blocks) <= moved  # Muon updated the matrices, AdamW the norms


# a Muon run resuming bit for bit: tests/train/test_trainer.py::test_resume_continues_exactly


def test_resuming_with_another_optimizer_names_the_field(tmp_path):
    quiet_train(tiny(train__optimizer="muon"), tmp_path / "run", until_step=3)
    with pytest.raises(CheckpointError, match=r"train.optimizer: .*'muon', this run uses 'adamw'"):
        quiet_train(tiny(), tmp_path / "run", resume=True)


def muon_pair(ns_dtype):
    """torch's Muon and arcdiff's on the same matrices (the toiny blocks' four shapes)."""
    from arcdiff.train.muon import Muon

    def make():
        torch.manual_seed(0)
        shapes = [(48, 16), (16, 16), (64, 16), (16, 64)] * 2
        return [nn.Parameter(torch.randn(*s) * 0.05) for s in shapes]

    a, b = make(), make()
    kw = {"lr": 0.02, "weight_decay": 0.01, "adjust_lr_fn": "original"}
    return a, b, torch.optim.Muon(a, **kw), Muon(b, ns_dtype=ns_dtype, **kw)


def step_both(a, b, oa, ob, steps=3):
    for i in range(steps):
        gen = torch.Generator().manual_seed(i)
        for p, q in zip(a, b, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()


def test_muon_in_bf16_is_torchs_muon_bit_for_bit():
    a, b, oa, ob = muon_pair(torch.bfloat16)
    step_both(a, b, oa, ob)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
    # and its state is torch's: a checkpoint of one loads into the other
    _, c, _, oc = muon_pair(torch.bfloat16)
    oc.load_state_dict(oa.state_dict())
    assert torch.equal(oc.state[c[0]]["momentum_buffer"], oa.state[a[0]]["momentum_buffer"])


def test_muon_in_float32_stays_close_to_bf16_and_orthogonalises():
    from arcdiff.train.muon import newton_schulz

    a, b, oa, ob = muon_pair(torch.float32)
    step_both(a, b, oa, ob)
    worst = max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))
    assert 0 < worst < 2e-3  # bf16 rounding apart, the same update
    # both orientations: the singular values of the result sit near 1 (0.5-1.5 by design)
    for shape in ((3, 16, 48), (3, 48, 16)):
        g = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        s = torch.linalg.svdvals(newton_schulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7))
        assert s.min() > 0.5 and s.max() < 1.5, (shape, s)


def test_the_newton_schulz_dtype_follows_the_hardware():
    from arcdiff.runs.device import cpu_supports_bf16
    from arcdiff.train.muon import muon_ns_dtype

    assert muon_ns_dtype(torch.device("cuda")) == torch.bfloat16
    expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert muon_ns_dtype(CPU) == expected
    opt = make_optimizer(build_model(tiny(), 5), 1e-3, 0.0, CPU, kind="muon")
    assert opt.optimizers["muon"].ns_dtype == expected
