"""2D rotary positions against a textbook per-token RoPE written out here, and a position task
that a rope-only model (the shipped preset's ``rope=true, abs_pos=false``) must learn."""

import math

import torch
import torch.nn.functional as F

from arcdiff.config import ModelConfig
from arcdiff.model.denoiser import PAD_TOKEN, Denoiser
from arcdiff.model.layers import Attention, apply_rotary, grid_rotary

BASE = 100.0  # grid_rotary's documented default


def textbook_rope(x: torch.Tensor, row: float, col: float) -> torch.Tensor:
    """One token's head vector x (D,) rotated as RoFormer does, with the D/2 pairs (2j, 2j+1)
    split over two axes: pairs j < D/4 turn by row * f_j, the others by col * f_(j - D/4),
    f_i = BASE^(-i / (D/4))."""
    d = x.shape[-1]
    quarter = d // 4
    out = x.clone()
    for j in range(d // 2):
        pos, i = (row, j) if j < quarter else (col, j - quarter)
        angle = pos * BASE ** (-i / quarter)
        c, s = math.cos(angle), math.sin(angle)
        x0, x1 = x[2 * j], x[2 * j + 1]
        out[2 * j], out[2 * j + 1] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def textbook_attention(attn: Attention, x: torch.Tensor, positions) -> torch.Tensor:
    """x (N, D) tokens at positions [(row, col)] -> (N, D): per head, q and k of every token
    rotated by its own position, v left as it is, softmax(q k^T / sqrt(d)) v, heads joined
    and projected."""
    n, d = x.shape
    heads = attn.n_heads
    hd = d // heads
    q, k, v = (x @ attn.qkv.weight.T).split(d, dim=-1)  # (N, D) each
    outs = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        qh = torch.stack([textbook_rope(q[t, cols], *positions[t]) for t in range(n)])
        kh = torch.stack([textbook_rope(k[t, cols], *positions[t]) for t in range(n)])
        weights = torch.softmax(qh @ kh.T / math.sqrt(hd), dim=-1)  # (N, N)
        outs.append(weights @ v[:, cols])
    return torch.cat(outs, dim=-1) @ attn.proj.weight.T


def test_attention_with_rotary_positions_is_textbook_2d_rope():
    torch.manual_seed(0)
    attn = Attention(d_model=32, n_heads=2).eval()  # head dim 16: 4 pairs per axis
    with torch.no_grad():  # sharp attention, so that positions move the weights visibly
        attn.qkv.weight.normal_(0, 0.5)
    positions = [(0, 0), (0, 1), (1, 0), (2, 3), (3, 2), (5, 5), (0, 7)]
    x = torch.randn(2, len(positions), 32)
    rows, cols = (torch.tensor(p, dtype=torch.float32) for p in zip(*positions, strict=True))
    with torch.no_grad():
        out = attn(x, grid_rotary(rows, cols, 16))
        expected = torch.stack([textbook_attention(attn, xb, positions) for xb in x])
        unrotated = attn(x)
    assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
    assert (out - unrotated).abs().max() > 0.1  # the positions did change the output


def test_each_output_cell_takes_its_input_cells_position():
    """The denoiser's sequence is [size token, S*S input cells, S*S output cells], row-major:
    input cell (r, c) and output cell (r, c) both sit at (r, c), the size token at (0, 0)."""
    s, head_dim = 3, 8
    model = Denoiser(num_tasks=1, max_size=5, d_model=16, n_heads=2, rope=True, abs_pos=False)
    rotary = model.grid_rotary(s, torch.device("cpu"))  # (1 + 2 S^2, head_dim / 2)
    cells = [(r, c) for r in range(s) for c in range(s)]
    positions = [(0, 0), *cells, *cells]
    assert rotary.shape == (len(positions), head_dim // 2)
    x = torch.randn(len(positions), head_dim, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([textbook_rope(x[t], *positions[t]) for t in range(len(positions))])
    assert torch.allclose(apply_rotary(x, rotary), expected, atol=1e-5)


def shift_batch(generator: torch.Generator, b: int = 32, s: int = 4):
    """Grids of colours 1-3 and their answers: every row moved one column right, 0 entering
    on the left."""
    x = torch.randint(1, 4, (b, s, s), generator=generator)
    y = torch.zeros_like(x)
    y[:, :, 1:] = x[:, :, :-1]
    return x, y


def test_a_rope_only_model_learns_a_task_that_needs_where_cells_are():
    """Shift right: output cell (r, c) is input cell (r, c - 1). A model that cannot tell where
    a key sits (no positions, or keys not rotated) knows at best that a quarter of the cells
    are 0 and the rest one of 3 colours, 3/4 ln 3 = 0.82 nats even if it knows each cell's own
    column; a loss below half of that says positions reach attention as offsets."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=32, n_heads=2, n_layers=1, rope=True, abs_pos=False, self_condition=False
    )
    model = Denoiser.from_config(cfg, num_tasks=1, max_size=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        x, y = shift_batch(generator)
        b = x.shape[0]
        zeros = torch.zeros(b, dtype=torch.long)
        noisy = torch.full_like(x, PAD_TOKEN)  # the output fully unknown: predict from x alone
        out = model(x, noisy, torch.full((b,), -20.0), zeros, zeros)
        loss = F.cross_entropy(out.logits.reshape(-1, 10), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    position_blind_floor = 0.75 * math.log(3)
    assert sum(losses[:5]) / 5 > math.log(3)  # it starts knowing nothing
    assert sum(losses[-10:]) / 10 < 0.5 * position_blind_floor, losses[-10:]
