import math

import pytest
import torch

from arcdiff.config import ModelConfig
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.model.denoiser import PAD_TOKEN, Denoiser
from arcdiff.model.layers import apply_rotary, grid_rotary


def make(**kw):
    torch.manual_seed(0)
    args = {"num_tasks": 5, "max_size": 6, "d_model": 32, "n_heads": 2, "n_layers": 2}
    return Denoiser(**{**args, **kw}).eval()


def inputs(b=3, s=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 11, (b, s, s), generator=g),
        torch.randint(0, 10, (b, s, s), generator=g),
        torch.randn(b, generator=g) * 5,
        torch.randint(0, 5, (b,), generator=g),
        torch.randint(0, 8, (b,), generator=g),
    )


def test_output_shapes_and_cropped_canvases():
    model = make()
    out = model(*inputs())
    assert out.logits.shape == (3, 6, 6, 10) and out.size_logits.shape == (3, 2, 6)
    small = model(*inputs(s=4))  # batches cropped to their largest grid use fewer tokens
    assert small.logits.shape == (3, 4, 4, 10) and small.size_logits.shape == (3, 2, 6)


def test_a_zero_gate_equals_a_single_pass():
    model = make()
    args = inputs()
    reference = model(*args)
    valid = torch.ones(3, 6, 6, dtype=torch.bool)
    with torch.no_grad():  # whatever the self-conditioning weights, a closed gate adds nothing
        model.sc_proj.weight.normal_()
        model.sc_norm.bias.normal_()
        model.sc_gate.zero_()
    again = model(*args, sc_logits=torch.randn(3, 6, 6, 10), valid=valid)
    assert torch.equal(reference.logits, again.logits)
    assert torch.equal(reference.size_logits, again.size_logits)
    # an empty valid region also adds nothing: no bias leaks through Linear + LayerNorm
    with torch.no_grad():
        model.sc_gate.fill_(5.0)
    empty = torch.zeros(3, 6, 6, dtype=torch.bool)
    masked = model(*args, sc_logits=torch.randn(3, 6, 6, 10), valid=empty)
    assert torch.equal(reference.logits, masked.logits)


def test_the_gate_starts_as_configured_scales_the_features_and_learns():
    assert make().sc_gate.item() == torch.tensor(0.3).item()
    model = make(sc_gate_init=0.7)
    assert model.sc_gate.item() == torch.tensor(0.7).item()
    args = inputs()
    first = model(*args)
    valid = torch.ones(3, 6, 6, dtype=torch.bool)
    second = model(*args, sc_logits=first.logits, valid=valid)
    assert not torch.allclose(first.logits, second.logits)
    features = model.self_cond_features(first.logits, valid)
    with torch.no_grad():
        model.sc_gate.mul_(2.0)
    assert torch.allclose(model.self_cond_features(first.logits, valid), 2 * features)
    model.train()
    model(*args, sc_logits=first.logits.detach(), valid=valid).logits.square().sum().backward()
    assert model.sc_gate.grad is not None and model.sc_gate.grad.abs().item() > 0


def test_every_conditioning_input_matters():
    model = make()
    base = inputs()
    ref = model(*base).logits
    for i in range(5):
        changed = list(base)
        changed[i] = inputs(seed=7)[i]
        assert not torch.allclose(ref, model(*changed).logits), f"input {i} is ignored"


def test_noise_level_is_read_as_logsnr_not_step():
    model = make()
    a = list(inputs())
    b = list(a)
    b[2] = a[2] + 1e-3  # between any two steps: a step index would not move
    change = (model(*a).logits - model(*b).logits).abs().max()
    assert 0 < change < 1e-2
    # the sampler hands the model the noise level: the same at different steps of two grids
    coarse, fine = DiscreteDiffusion(num_timesteps=128), DiscreteDiffusion(num_timesteps=256)
    at = [coarse.logsnr(torch.full((3,), 63)), fine.logsnr(torch.full((3,), 127))]
    assert torch.equal(at[0], at[1])


def test_from_config_and_parameter_count():
    cfg = ModelConfig(d_model=384, n_heads=6, n_layers=4)
    model = Denoiser.from_config(cfg, num_tasks=800, max_size=30)
    d, s, vocab = 384, 30, 11
    blocks = 4 * (12 * d * d + 4 * d)  # qkv, proj, 2 MLP matrices, 2 LayerNorms per layer
    embeddings = 3 * vocab * d + 2 * s * d + 3 * d + d + 800 * d + 8 * d  # + size token, task
    noise = 128 * d + d + d * d + d  # sinusoids (64 frequencies, sin and cos) -> MLP
    heads = 2 * d + (10 * d + 10) + (2 * s * d + 2 * s)  # final norm, colour, size (no copy)
    self_cond = 10 * d + d + 2 * d + 1  # Linear(10, d), LayerNorm, gate
    assert model.num_params() == blocks + embeddings + noise + heads + self_cond
    assert not hasattr(
        Denoiser.from_config(ModelConfig(self_condition=False), num_tasks=1, max_size=3), "sc_gate"
    )


def grid_inputs(h: int, w: int, s: int = 6, b: int = 1) -> torch.Tensor:
    canvas = torch.full((b, s, s), PAD)
    canvas[:, :h, :w] = 3
    return canvas


def test_size_copy_classes_fold_onto_the_input_lengths():
    model = make()
    raw = torch.full((2, 2, 6 + 2), -30.0)
    raw[:, 0, 6] = 0.0  # height: "the input's height"
    raw[:, 1, 7] = 0.0  # width: "the input's width"
    inputs = torch.cat([grid_inputs(2, 5), grid_inputs(4, 1)])
    logp = model.fold_copy_classes(raw, inputs)
    assert logp.shape == (2, 2, 6)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 2))  # still a distribution
    assert (logp.argmax(-1) + 1).tolist() == [[2, 5], [4, 1]]  # read off each input
    # the padding token is the data layer's PAD
    assert PAD_TOKEN == PAD


def test_size_copy_adds_the_copy_probability_to_the_absolute_length():
    model = make()
    torch.manual_seed(3)
    raw = torch.randn(1, 2, 8)
    inputs = grid_inputs(3, 3)  # both copy classes name length 3
    p = raw.softmax(-1)
    folded = model.fold_copy_classes(raw, inputs).exp()
    expected = p[..., :6].clone()
    expected[..., 2] += p[..., 6] + p[..., 7]
    assert torch.allclose(folded, expected, atol=1e-6)


def test_size_copy_off_keeps_plain_absolute_logits():
    model = make(size_copy=False)
    assert model.size_head.out_features == 2 * 6
    assert make().size_head.out_features == 2 * 8
    out = model(*inputs())
    assert out.size_logits.shape == (3, 2, 6)


# ---------------------------------------------------------------------------------------------
# 2D rotary positions


def test_rotary_pairs_turn_with_row_and_column_exactly():
    # head dim 4: pair (0, 1) turns with the row, pair (2, 3) with the column, frequency 1
    rotary = grid_rotary(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), 4)
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    out = apply_rotary(x, rotary)
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(2), math.sin(2)
    assert torch.allclose(out, torch.tensor([[c1, s1, 0.0, 0.0], [0.0, 0.0, c2, s2]]))
    # position (0, 0) is the identity
    zero = grid_rotary(torch.zeros(1), torch.zeros(1), 8)
    v = torch.randn(3, 1, 8)
    assert torch.equal(apply_rotary(v, zero), v)


def test_rotary_scores_depend_on_the_offset_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 32, generator=g), torch.randn(2, 32, generator=g)
    rows, cols = torch.tensor([3.0, 7.0]), torch.tensor([1.0, 5.0])

    def score(shift_r: float, shift_c: float) -> torch.Tensor:
        rot = grid_rotary(rows + shift_r, cols + shift_c, 32)
        return (apply_rotary(q, rot)[0] * apply_rotary(k, rot)[1]).sum()

    base = score(0, 0)
    for shift in [(1, 0), (0, 4), (-3, 11), (20, 20)]:
        assert torch.allclose(score(*shift), base, atol=1e-5)
    # a different offset gives a different score: the rotation does carry position
    other = grid_rotary(torch.tensor([3.0, 8.0]), cols, 32)
    assert not torch.allclose((apply_rotary(q, other)[0] * apply_rotary(k, other)[1]).sum(), base)
    # and the norm of each vector is kept
    rot = grid_rotary(rows, cols, 32)
    assert torch.allclose(apply_rotary(q, rot).norm(dim=-1), q.norm(dim=-1))


def test_rope_gives_positions_to_a_model_without_position_embeddings():
    # with no position information at all the model is blind to where a cell is: permuting
    # the cells of both canvases permutes the output logits; rope breaks that symmetry
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(3))
    x_in, noisy, logsnr, task, dihedral = inputs(b=2)
    x_in = x_in.clamp(max=9)  # full canvases: no PAD to re-place

    def permuted_logits(model):
        with torch.no_grad():  # sharp attention, so that where a key sits matters
            for block in model.blocks:
                block.attn.qkv.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
        moved = (x_in.flatten(1)[:, perm].view(2, 6, 6), noisy.flatten(1)[:, perm].view(2, 6, 6))
        out = model(*moved, logsnr, task, dihedral).logits.flatten(1, 2)
        ref = model(x_in, noisy, logsnr, task, dihedral).logits.flatten(1, 2)[:, perm]
        return out, ref

    out, ref = permuted_logits(make(abs_pos=False, rope=False))
    assert torch.allclose(out, ref, atol=1e-5)
    out, ref = permuted_logits(make(abs_pos=False, rope=True))
    assert (out - ref).abs().max() > 0.01


def test_rope_switches_build_their_parameters_and_check_the_head_dimension():
    plain = make()
    rope_only = make(rope=True, abs_pos=False)
    missing = set(plain.state_dict()) - set(rope_only.state_dict())
    assert missing == {"row_embed.weight", "col_embed.weight"}  # rotary angles are no weights
    assert set(make(rope=True).state_dict()) == set(plain.state_dict())
    assert make(rope=True)(*inputs(s=4)).logits.shape == (3, 4, 4, 10)  # cropped canvases
    with pytest.raises(ValueError, match="divisible by 4"):
        make(d_model=36, n_heads=6, rope=True)  # head dim 6
    cfg = ModelConfig(rope=True, abs_pos=False)
    assert Denoiser.from_config(cfg, num_tasks=2, max_size=5).rope
