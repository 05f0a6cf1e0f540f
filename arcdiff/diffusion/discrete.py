"""Discrete diffusion over the 10 ARC colours of an output grid.

Training steps ``i = 0 .. T-1`` sit at continuous times ``t = (i + 1) / T`` of a schedule
(``arcdiff.diffusion.schedules``); ``alpha_bar(t)`` is the probability that a cell still holds
its clean colour. What a cell becomes otherwise is its kernel's business (:data:`KERNELS`):

* uniform kernel (Austin et al. 2021, D3PM "uniform"): a cell keeps its colour with probability
  alpha_bar, otherwise takes a uniformly random colour (which may be the same one);
* absorbing kernel (D3PM "absorbing" / MDLM): a cell keeps its colour with probability
  alpha_bar, otherwise becomes MASK.

Cells outside the true output grid carry no information at any noise level (uniform noise, or
MASK), so the denoiser cannot read the output size off the canvas at high noise; the sampler
re-noises them the same way around its current size estimate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from arcdiff.config import NUM_COLOURS, DiffusionConfig
from arcdiff.diffusion.schedules import alpha_bar as schedule_alpha_bar
from arcdiff.errors import ConfigError

MASK = NUM_COLOURS  # token 10 on the noisy output canvas (absorbing kernel)
LOGSNR_LIMIT = 20.0


def sampling_steps(num_timesteps: int, num_steps: int) -> Tensor:
    """The training steps an N-step sampler visits, noisiest first.

    ``round(linspace(T - 1, 0, N))``: strictly decreasing for N <= T, starting at the noisiest
    step T - 1 and ending at the cleanest step 0 (N = 1 visits only the noisiest step). After
    the last visited step the sampler outputs its x0 prediction.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ConfigError(
            f"num_steps={num_steps} must be in 1..num_timesteps={num_timesteps} "
            "(the sampler visits steps of the training grid)"
        )
    if num_steps == 1:
        return torch.tensor([num_timesteps - 1])
    return torch.linspace(num_timesteps - 1, 0, num_steps, dtype=torch.float64).round().long()


@dataclass(frozen=True)
class Kernel(ABC):
    """What a corrupted cell becomes: one forward process q(x_t | x0) over the colours.

    A cell keeps its clean colour with probability ``a`` = alpha_bar, otherwise it is replaced
    by the kernel's noise. A kernel is stateless; :data:`KERNELS` holds one of each by name.
    """

    name: ClassVar[str]
    num_states: ClassVar[int]  # K: the tokens a noisy cell can hold
    mask_token: ClassVar[int | None] = None  # the token a corrupted cell becomes, if only one

    @abstractmethod
    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pure noise of ``x0``'s shape, on its device."""

    def corrupt(
        self, x0: Tensor, keep_prob: Tensor, valid: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """x_t ~ q(x_t | x0): each cell inside ``valid`` keeps its colour with ``keep_prob``
        (broadcast against x0), every other cell is pure noise."""
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
        noise = self.noise_like(x0, generator)
        keep = (u < keep_prob) & valid
        return torch.where(keep, x0, noise)

    @abstractmethod
    def transitions(self, a: float) -> Tensor:
        """(10, K) q(x_t = j | x0 = i) at alpha_bar ``a``."""

    @abstractmethod
    def posterior(self, x_t: Tensor, probs: Tensor, a_t: float, a_s: float) -> Tensor:
        """(B, S, S, K) p(x_s | x_t) given p(x0 | x_t) = ``probs`` (B, S, S, 10), at alpha_bar
        ``a_t`` now and ``a_s`` >= a_t at the next step (:meth:`DiscreteDiffusion.posterior`)."""

    def loss_weights(self, valid: Tensor) -> Tensor:
        """(B, S, S) weight of each cell's x0 cross-entropy: every cell of the true grid, 1.

        Both kernels train on plain cross-entropy over all valid cells, not an ELBO weighting;
        the model's softmax then estimates p(x0 | x_t), which :meth:`posterior` needs."""
        return valid.float()

    def scored_cells(self, valid: Tensor, kept: Tensor) -> Tensor:
        """(B, S, S) bool: the cells of a corrupted grid whose x0 log-probability says how
        likely the model finds the grid (the ranking's likelihood), given the cells ``kept``
        clean. Here every valid cell: any cell may have been replaced, so each one is
        evidence."""
        return valid


@dataclass(frozen=True)
class UniformKernel(Kernel):
    """D3PM "uniform": a corrupted cell takes a uniformly random colour (possibly its own)."""

    name: ClassVar[str] = "uniform"
    num_states: ClassVar[int] = NUM_COLOURS

    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(0, NUM_COLOURS, x0.shape, generator=generator, device=x0.device)

    def transitions(self, a: float) -> Tensor:
        return a * torch.eye(NUM_COLOURS) + (1 - a) / NUM_COLOURS

    def posterior(self, x_t: Tensor, probs: Tensor, a_t: float, a_s: float) -> Tensor:
        """With a_ts = a_t / a_s and w = p(x0 | x_t) / q(x_t | x0):
        q(x_t | x0 = i) = a_t [i = x_t] + (1 - a_t) / K,
        q(x_t | x_s = j) = a_ts [j = x_t] + (1 - a_ts) / K,
        p(x_s = j | x_t) = q(x_t | x_s = j) (a_s w_j + (1 - a_s) / K sum_i w_i)."""
        k = NUM_COLOURS
        onehot = F.one_hot(x_t.clamp(max=k - 1), k).float()  # (B, S, S, K)
        a_ts = a_t / max(a_s, 1e-12)  # alpha of the s -> t transition
        from_t = a_ts * onehot + (1 - a_ts) / k  # q(x_t | x_s = j)
        weight = probs / (a_t * onehot + (1 - a_t) / k).clamp(min=1e-12)  # p / q(x_t | x0)
        from_0 = a_s * weight + (1 - a_s) / k * weight.sum(dim=-1, keepdim=True)
        post = from_t * from_0
        return post / post.sum(dim=-1, keepdim=True)


@dataclass(frozen=True)
class AbsorbingKernel(Kernel):
    """D3PM "absorbing" / MDLM: a corrupted cell becomes MASK."""

    name: ClassVar[str] = "absorbing"
    num_states: ClassVar[int] = NUM_COLOURS + 1
    mask_token: ClassVar[int | None] = MASK

    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.full_like(x0, MASK)

    def transitions(self, a: float) -> Tensor:
        return torch.cat([a * torch.eye(NUM_COLOURS), torch.full((NUM_COLOURS, 1), 1 - a)], dim=1)

    def posterior(self, x_t: Tensor, probs: Tensor, a_t: float, a_s: float) -> Tensor:
        """q(x_t = MASK | x0) = 1 - a_t for every x0, so the weight 1 / q(x_t | x0) is a
        constant. A colour cell stays (x0 = x_t); a MASK cell unmasks with probability
        (a_s - a_t) / (1 - a_t) to a colour drawn from p(x0 | x_t), else stays MASK."""
        unmask = (a_s - a_t) / max(1 - a_t, 1e-12)
        masked = (x_t == MASK).unsqueeze(-1)
        colours = torch.cat([probs * unmask, torch.full_like(probs[..., :1], 1 - unmask)], -1)
        kept = F.one_hot(x_t, NUM_COLOURS + 1).float()
        return torch.where(masked, colours, kept)

    def scored_cells(self, valid: Tensor, kept: Tensor) -> Tensor:
        """Only the masked cells: a kept cell shows its clean colour on the canvas, so the
        model copies it and its near-zero log-probability would only dilute the mean."""
        return valid & ~kept


KERNELS: dict[str, Kernel] = {k.name: k for k in (UniformKernel(), AbsorbingKernel())}


@dataclass(frozen=True)
class StepOutput:
    """One reverse step: the sample at the next step and the x0 the model predicted."""

    prev_sample: Tensor  # (B, S, S) int64
    pred_x0: Tensor  # (B, S, S) int64, argmax of the x0 logits


@dataclass(frozen=True)
class DiscreteDiffusion:
    """Forward corruption, x0-parameterised loss and reverse step for one kernel/schedule."""

    kernel: Kernel = field(default_factory=UniformKernel)  # one of KERNELS' values
    schedule: str = "cosine"
    num_timesteps: int = 128

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> DiscreteDiffusion:
        return cls(
            kernel=KERNELS[cfg.kernel], schedule=cfg.schedule, num_timesteps=cfg.num_timesteps
        )

    def alpha_bar(self, step: Tensor) -> Tensor:
        """alpha_bar at training steps (any shape); step -1 is clean data (alpha_bar = 1)."""
        t = (step.double() + 1) / self.num_timesteps
        return schedule_alpha_bar(t, self.schedule).float().clamp(0.0, 1.0)

    def logsnr(self, step: Tensor) -> Tensor:
        """log(alpha_bar / (1 - alpha_bar)), clipped to +-20: the noise level the model sees."""
        a = self.alpha_bar(step).double().clamp(1e-12, 1 - 1e-12)
        return (a.log() - (-a).log1p()).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT).float()

    def draw_timesteps(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` training timesteps, uniform over 0..num_timesteps-1, on the generator's device."""
        device = generator.device if generator is not None else None
        return torch.randint(0, self.num_timesteps, (n,), generator=generator, device=device)

    def noise_like(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pure noise: the kernel's (uniform colours, or MASK everywhere)."""
        return self.kernel.noise_like(x0, generator)

    def corrupt(
        self,
        x0: Tensor,
        step: Tensor,
        valid: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) inside ``valid``; pure noise outside.

        x0 (B, S, S) colours (anything outside ``valid``), step (B,), valid (B, S, S) bool.
        """
        keep_prob = self.alpha_bar(step).to(x0.device)[:, None, None]  # (B, 1, 1)
        return self.kernel.corrupt(x0, keep_prob, valid, generator)

    def loss(
        self,
        logits: Tensor,
        size_logits: Tensor,
        x0: Tensor,
        sizes: Tensor,
        valid: Tensor,
        size_loss_weight: float,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the clean colours over each true output grid, plus the size loss.

        logits (B, S, S, 10), size_logits (B, 2, S), x0 (B, S, S), sizes (B, 2) as (h, w),
        valid (B, S, S). The colour loss is a weighted mean over cells per example (the
        kernel's :meth:`~Kernel.loss_weights`), then a mean over examples.
        """
        ce = F.cross_entropy(
            logits.float().flatten(0, 2), x0.clamp(max=NUM_COLOURS - 1).flatten(), reduction="none"
        ).view_as(x0)  # (B, S, S)
        weights = self.kernel.loss_weights(valid)  # (B, S, S)
        cells = weights.sum(dim=(1, 2)).clamp(min=1)
        colour = ((ce * weights).sum(dim=(1, 2)) / cells).mean()
        size = F.cross_entropy(size_logits.float().flatten(0, 1), (sizes - 1).flatten())
        return colour + size_loss_weight * size, {"colour_loss": colour, "size_loss": size}

    def reverse_step(
        self,
        x_t: Tensor,
        logits: Tensor,
        step: int,
        next_step: int,
        valid: Tensor,
        *,
        argmax: bool = False,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Move from training step ``step`` to ``next_step`` (< step; -1 = clean).

        Stochastic (ancestral): a sample of :meth:`posterior`, p(x_s | x_t) with the model's
        softmax read as p(x0 | x_t); to ``next_step = -1`` that is a sample of x0 itself.
        ``argmax``: deterministic, the x0 prediction's argmax re-noised to nothing (every cell
        set to its most likely clean colour), the refinement the deterministic sampler uses.
        Cells outside ``valid`` become fresh noise, as in training.
        """
        probs = logits.float().softmax(dim=-1)  # (B, S, S, 10)
        pred_x0 = probs.argmax(dim=-1)
        if argmax:
            x_s = pred_x0
        else:
            posterior = self.posterior(x_t, probs, step, next_step)
            flat = posterior.flatten(0, 2)
            x_s = torch.multinomial(flat, 1, generator=generator).view_as(x_t)
        if next_step >= 0:
            x_s = torch.where(valid, x_s, self.noise_like(x_s, generator))
        return StepOutput(prev_sample=x_s, pred_x0=pred_x0)

    def posterior(self, x_t: Tensor, probs: Tensor, step: int, next_step: int) -> Tensor:
        """p(x_s | x_t) per cell, s = ``next_step`` < t = ``step``, given p(x0 | x_t) = ``probs``.

        x_t (B, S, S), probs (B, S, S, 10) -> (B, S, S, K), K = the kernel's ``num_states``
        (10 colours, or 10 colours + MASK). The model is trained with plain cross-entropy, so
        its softmax estimates p(x0 | x_t), and the exact reverse step marginalises the
        x0-conditioned posterior of Austin et al. 2021 (D3PM, eq. 3) over it:

            p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t)
                         = q(x_t | x_s) sum_x0 q(x_s | x0) p(x0 | x_t) / q(x_t | x0),

        using q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0) (Markov forward
        process). D3PM's eq. 4 drops the 1 / q(x_t | x0) weight; that is only right where the
        prediction is one-hot or q(x_t | x0) does not depend on x0. Each kernel's
        :meth:`~Kernel.posterior` gives the closed form; ``next_step = -1`` (a_s = 1) gives
        p(x0 | x_t) itself for both kernels.
        """
        a_t = self.alpha_bar(torch.tensor(step)).item()
        a_s = self.alpha_bar(torch.tensor(next_step)).item()
        return self.kernel.posterior(x_t, probs, a_t, a_s)
