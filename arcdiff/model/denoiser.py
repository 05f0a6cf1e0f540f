"""The transformer denoiser.

(task, augmentation, input grid, noisy output grid, logSNR) -> colour logits for every output
cell and logits for the output height and width.

The sequence is one size token, the S*S input-canvas tokens and the S*S output-canvas tokens.
Every token gets its content embedding and a segment embedding (size token, input, output);
cell positions enter as learned row and column embeddings (``abs_pos``) and/or as 2D rotary
angles of the queries and keys in every attention layer (``rope``: the cell's row and column
in the grid's own frame, so an output cell and the input cell at the same place differ by
zero; the size token is not rotated). The conditioning vector (task + dihedral id + noise
level) is added to every token. With ``input_colour``, each output token also embeds the
input colour at its canvas position. An all-PAD input canvas asks for a grid alone (the
self-supervised examples of ``data.self_supervised``).

Gated log-prob self-conditioning: the logits of a first pass, as log-softmax at temperature
``sc_temperature``, centred per cell, go through Linear(10, d) + LayerNorm and a learnable
scalar gate (init ``sc_gate_init``) into the output tokens of a second pass; cells outside
the valid region get nothing. Without self-conditioning the path is skipped, so it adds
exactly zero.

Size head with copy classes (``size_copy``): most ARC outputs take a side length from the
input (same shape, or transposed). Besides the S absolute lengths, each of height and width
gets two classes "the input's height" and "the input's width"; the returned ``size_logits``
are the marginal log-probabilities of each absolute length (copy classes folded onto the
length they name), so losses and argmax downstream see an ordinary (B, 2, S) distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from arcdiff.config import NUM_COLOURS, ModelConfig
from arcdiff.model.layers import Block, NoiseLevelEmbedding, Rotary, grid_rotary

VOCAB = NUM_COLOURS + 1  # colours + PAD (input canvas) / MASK (output canvas)
PAD_TOKEN = NUM_COLOURS  # the input canvas's padding token, as in arcdiff.data.encode


@dataclass(frozen=True)
class DenoiserOutput:
    logits: Tensor  # (B, S, S, 10) colour logits of the clean output
    size_logits: Tensor  # (B, 2, S) logits of height - 1 and width - 1


class Denoiser(nn.Module):
    def __init__(
        self,
        *,
        num_tasks: int,
        max_size: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        input_colour: bool = True,
        self_condition: bool = True,
        sc_temperature: float = 1.5,
        sc_gate_init: float = 0.3,
        size_copy: bool = True,
        rope: bool = False,
        abs_pos: bool = True,
    ):
        super().__init__()
        self.max_size = max_size
        self.num_tasks = num_tasks
        self.sc_temperature = sc_temperature
        s = max_size
        self.input_embed = nn.Embedding(VOCAB, d_model)
        self.output_embed = nn.Embedding(VOCAB, d_model)
        # copying is the most common ARC relation: give each output cell the input colour at
        # the same canvas position directly instead of only through attention
        self.input_colour_embed = nn.Embedding(VOCAB, d_model) if input_colour else None
        self.abs_pos = abs_pos
        if abs_pos:
            self.row_embed = nn.Embedding(s, d_model)
            self.col_embed = nn.Embedding(s, d_model)
        self.head_dim = d_model // n_heads
        self.rope = rope
        if rope and self.head_dim % 4:
            raise ValueError(f"rope needs d_model / n_heads divisible by 4, got {self.head_dim}")
        self.segment_embed = nn.Embedding(3, d_model)  # size token, input, output
        self.size_token = nn.Parameter(torch.zeros(d_model))
        self.task_embed = nn.Embedding(num_tasks, d_model)
        self.dihedral_embed = nn.Embedding(8, d_model)
        self.noise_embed = NoiseLevelEmbedding(d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.colour_head = nn.Linear(d_model, NUM_COLOURS)
        self.size_copy = size_copy
        self.size_head = nn.Linear(d_model, 2 * (s + 2 * size_copy))
        self.self_condition = self_condition
        if self_condition:
            self.sc_proj = nn.Linear(NUM_COLOURS, d_model)
            self.sc_norm = nn.LayerNorm(d_model)
            self.sc_gate = nn.Parameter(torch.tensor(float(sc_gate_init)))
        self.apply(self._init_weights)

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, num_tasks: int, max_size: int) -> Denoiser:
        return cls(
            num_tasks=num_tasks,
            max_size=max_size,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_layers=cfg.n_layers,
            mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout,
            input_colour=cfg.input_colour,
            self_condition=cfg.self_condition,
            sc_temperature=cfg.sc_temperature,
            sc_gate_init=cfg.sc_gate_init,
            size_copy=cfg.size_copy,
            rope=cfg.rope,
            abs_pos=cfg.abs_pos,
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def self_cond_features(self, sc_logits: Tensor, valid: Tensor) -> Tensor:
        """(B, S, S, 10) first-pass logits -> (B, S*S, D) gated features, zero outside valid."""
        logp = (sc_logits.float() / self.sc_temperature).log_softmax(dim=-1)
        logp = logp - logp.mean(dim=-1, keepdim=True)  # centred per cell
        logp = logp * valid.unsqueeze(-1)
        features = self.sc_gate * self.sc_norm(self.sc_proj(logp.to(self.sc_proj.weight.dtype)))
        return rearrange(features * valid.unsqueeze(-1), "b h w d -> b (h w) d")

    def forward(
        self,
        inputs: Tensor,
        noisy: Tensor,
        logsnr: Tensor,
        task: Tensor,
        dihedral: Tensor,
        *,
        sc_logits: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> DenoiserOutput:
        """inputs, noisy (B, S, S) tokens; logsnr (B,); task, dihedral (B,);
        sc_logits (B, S, S, 10) from a first pass and its valid region (B, S, S), or None."""
        b, s, _ = inputs.shape
        n = s * s
        idx = torch.arange(s, device=inputs.device)  # canvases may be cropped to s <= max_size
        pos = 0.0
        if self.abs_pos:
            pos = (self.row_embed(idx)[:, None] + self.col_embed(idx)[None, :]).flatten(0, 1)
        seg = self.segment_embed.weight  # (3, D)
        x_in = self.input_embed(inputs.flatten(1)) + pos + seg[1]  # (B, N, D)
        x_out = self.output_embed(noisy.flatten(1)) + pos + seg[2]  # (B, N, D)
        if self.input_colour_embed is not None:
            x_out = x_out + self.input_colour_embed(inputs.flatten(1))
        if sc_logits is not None:
            if not self.self_condition:
                raise ValueError("this model was built without self-conditioning")
            assert valid is not None, "self-conditioning needs the valid region"
            x_out = x_out + self.self_cond_features(sc_logits, valid)
        cond = self.task_embed(task) + self.dihedral_embed(dihedral) + self.noise_embed(logsnr)
        size_tok = (self.size_token + seg[0]).expand(b, 1, -1)
        x = torch.cat([size_tok, x_in, x_out], dim=1) + cond[:, None, :]  # (B, 1 + 2N, D)
        rotary = self.grid_rotary(s, inputs.device) if self.rope else None
        for block in self.blocks:
            x = block(x, rotary)
        x = self.norm(x)
        logits = self.colour_head(x[:, 1 + n :]).view(b, s, s, NUM_COLOURS)  # (B, S, S, 10)
        size_logits = self.size_head(x[:, 0]).view(b, 2, -1)
        if self.size_copy:
            size_logits = self.fold_copy_classes(size_logits, inputs)
        return DenoiserOutput(logits=logits, size_logits=size_logits)  # (B, 2, S_max)

    def grid_rotary(self, s: int, device: torch.device) -> Rotary:
        """Rotary angles of the sequence [size token, input cells, output cells] on an S x S
        canvas: cell (r, c) of either grid at (r, c), the size token unrotated."""
        idx = torch.arange(s, device=device, dtype=torch.float32)
        rows, cols = idx.repeat_interleave(s), idx.repeat(s)  # (N,) row-major, as flatten(1)
        zero = torch.zeros(1, device=device)
        return grid_rotary(
            torch.cat([zero, rows, rows]), torch.cat([zero, cols, cols]), self.head_dim
        )  # (1 + 2N, D/H/2) complex

    def fold_copy_classes(self, raw: Tensor, inputs: Tensor) -> Tensor:
        """(B, 2, S_max + 2) raw size logits -> (B, 2, S_max) log-probs of absolute lengths.

        Classes S_max and S_max + 1 mean "the input's height" and "the input's width"; their
        probability is added to the absolute length they name for each example.
        """
        logp = raw.float().log_softmax(-1)
        absolute, copy = logp[..., : self.max_size], logp[..., self.max_size :]  # (B,2,S) (B,2,2)
        grid = inputs != PAD_TOKEN
        in_hw = torch.stack([grid.any(2).sum(1), grid.any(1).sum(1)], dim=-1)  # (B, 2) (h, w)
        lengths = torch.arange(1, self.max_size + 1, device=raw.device)
        names = lengths[None, :, None] == in_hw[:, None, :]  # (B, S, 2): length == input h / w
        copy_at = copy[:, :, None, :].masked_fill(~names[:, None], -torch.inf)  # (B, 2, S, 2)
        return torch.logsumexp(torch.cat([absolute[..., None], copy_at], dim=-1), dim=-1)


def example_inputs(batch: int, side: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Random denoiser inputs (input canvas, noisy output, logSNR, task 0, dihedral 0) of
    ``batch`` canvases of ``side`` x ``side``: what tests and benchmarks feed a model."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, VOCAB, (batch, side, side), generator=g),
        torch.randint(0, NUM_COLOURS, (batch, side, side), generator=g),
        torch.randn(batch, generator=g),
        torch.zeros(batch, dtype=torch.long),
        torch.zeros(batch, dtype=torch.long),
    )
