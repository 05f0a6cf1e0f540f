"""Gaussian diffusion on a discrete training grid: noising, targets, DDPM and DDIM steps, CFG.

Notation: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020), v = sqrt(abar_t) eps -
sqrt(1 - abar_t) x_0 (Salimans & Ho 2022). A sampler step goes from training step t to an earlier
step s (s = -1 means the data, abar = 1) on any spacing from ``schedules.inference_timesteps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from arcdiff.diffusion import schedules
from arcdiff.errors import ConfigError

Prediction = Literal["eps", "v", "x0"]
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")
Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, ...), t (B,) int64) -> model output


def _bcast(a: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so a per-sample coefficient multiplies a (B, ...) tensor."""
    return a.reshape(-1, *([1] * (like.dim() - 1)))


def x0_from_eps(x_t: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, abar: Tensor) -> Tensor:
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def x0_from_v(x_t: Tensor, v: Tensor, abar: Tensor) -> Tensor:
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def eps_from_v(x_t: Tensor, v: Tensor, abar: Tensor) -> Tensor:
    return (1 - abar).sqrt() * x_t + abar.sqrt() * v


def v_from_x0_eps(x0: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


@dataclass(frozen=True)
class StepOutput:
    """One sampler step: the sample at the earlier step and the x_0 it was built from."""

    prev_sample: Tensor
    pred_x0: Tensor


class GaussianDiffusion(nn.Module):
    """The noising process on ``num_timesteps`` training steps and the samplers that invert it.

    Schedule tensors are buffers, so ``.to(device)`` moves them with the model.
    """

    def __init__(
        self,
        *,
        num_timesteps: int = 1000,
        schedule: schedules.ScheduleName = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: Prediction = "eps",
        zero_terminal_snr: bool = False,  # Lin et al. 2023; needs prediction "v" or "x0"
        clip_x0: float | None = None,  # clamp predicted x_0 to [-c, c]; off: toy data is wide
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ConfigError(
                f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}"
            )
        if schedule not in schedules.SCHEDULES:
            raise ConfigError(
                f"schedule must be one of {', '.join(schedules.SCHEDULES)}, got {schedule!r}"
            )
        if zero_terminal_snr and prediction == "eps":
            raise ConfigError(
                "zero_terminal_snr needs prediction 'v' or 'x0': at SNR 0 an eps-prediction "
                "carries no information about x_0 (Lin et al. 2023)"
            )
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.prediction = prediction
        self.zero_terminal_snr = zero_terminal_snr
        self.clip_x0 = clip_x0
        betas = schedules.discrete_betas(
            schedule, num_timesteps, beta_start=beta_start, beta_end=beta_end
        )
        abar = schedules.alpha_bars_from_betas(betas)
        if zero_terminal_snr:
            abar = schedules.rescale_zero_terminal_snr(abar)
        # float64 on purpose: 1 - abar near t = 0 loses digits in float32.
        # Entry 0 is step -1 (the data, abar = 1), entry i + 1 is training step i.
        self.register_buffer("abar_table", torch.cat([abar.new_ones(1), abar]), persistent=False)

    @property
    def alpha_bar(self) -> Tensor:
        """alpha_bar at training steps 0 .. T-1, shape (T,)."""
        return self.abar_table[1:]

    def abar_at(self, t: Tensor) -> Tensor:
        """alpha_bar at training steps t (int64, any shape); step -1 gives 1 (clean data)."""
        return self.abar_table[t + 1]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Forward process q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        abar = _bcast(self.abar_at(t), x0).to(x0.dtype)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the model is trained to output for this (x_0, noise, t): eps, v or x_0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return v_from_x0_eps(x0, noise, _bcast(self.abar_at(t), x0).to(x0.dtype))

    def split(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(predicted x_0, predicted eps) from the model output at step t, with optional clip."""
        abar = _bcast(self.abar_at(t), x_t)
        if self.prediction == "eps":
            eps, x0 = model_output, x0_from_eps(x_t, model_output, abar)
        elif self.prediction == "v":
            x0, eps = x0_from_v(x_t, model_output, abar), eps_from_v(x_t, model_output, abar)
        else:
            x0, eps = model_output, eps_from_x0(x_t, model_output, abar)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = eps_from_x0(x_t, x0, abar)
        return x0.to(x_t.dtype), eps.to(x_t.dtype)

    def ddim_step(
        self,
        model_output: Tensor,
        x_t: Tensor,
        t: Tensor,
        prev_t: Tensor,
        *,
        eta: float = 0.0,
        noise: Tensor | None = None,
    ) -> StepOutput:
        """DDIM (Song et al. 2021, eq. 12) from step t to step prev_t < t, both (B,) int64.

        eta = 0 is deterministic; eta = 1 has the DDPM posterior variance.
        """
        x0, eps = self.split(model_output, x_t, t)
        abar_t = _bcast(self.abar_at(t), x_t)
        abar_s = _bcast(self.abar_at(prev_t), x_t)
        sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)).clamp(min=0).sqrt()
        direction = (1 - abar_s - sigma**2).clamp(min=0).sqrt() * eps
        prev = abar_s.sqrt() * x0 + direction
        if eta > 0:
            prev = prev + sigma * (torch.randn_like(x_t) if noise is None else noise)
        return StepOutput(prev_sample=prev.to(x_t.dtype), pred_x0=x0)

    def ddpm_step(
        self,
        model_output: Tensor,
        x_t: Tensor,
        t: Tensor,
        prev_t: Tensor,
        *,
        noise: Tensor | None = None,
    ) -> StepOutput:
        """Ancestral step: a draw from the posterior q(x_s | x_t, x_0 = predicted x_0).

        With s = t - 1 this is Ho et al. 2020, eq. 6-7; for skipped steps the per-step alpha is
        abar_t / abar_s (Nichol & Dhariwal 2021, section 4).
        """
        x0, _ = self.split(model_output, x_t, t)
        abar_t = _bcast(self.abar_at(t), x_t)
        abar_s = _bcast(self.abar_at(prev_t), x_t)
        alpha_ts = abar_t / abar_s
        beta_ts = 1 - alpha_ts
        mean = (abar_s.sqrt() * beta_ts * x0 + alpha_ts.sqrt() * (1 - abar_s) * x_t) / (1 - abar_t)
        variance = (beta_ts * (1 - abar_s) / (1 - abar_t)).clamp(min=0)
        z = torch.randn_like(x_t) if noise is None else noise
        return StepOutput(prev_sample=(mean + variance.sqrt() * z).to(x_t.dtype), pred_x0=x0)

    def sample_steps(
        self,
        denoiser: Denoiser,
        x_T: Tensor,
        *,
        num_steps: int | None = None,
        spacing: schedules.Spacing = "leading",
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[StepOutput]:
        """Run the reverse process from x_T, yielding after every step (last one is the sample)."""
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        steps = schedules.inference_timesteps(
            self.num_timesteps, num_steps or self.num_timesteps, spacing
        ).to(x_T.device)
        prevs = schedules.previous_timesteps(steps)
        x = x_T
        for t, s in zip(steps.tolist(), prevs.tolist(), strict=True):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            ss = torch.full_like(tt, s)
            out = denoiser(x, tt)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if sampler == "ddpm":
                step = self.ddpm_step(out, x, tt, ss, noise=noise)
            else:
                step = self.ddim_step(out, x, tt, ss, eta=eta, noise=noise)
            x = step.prev_sample
            yield step

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, x_T: Tensor, **kwargs) -> Tensor:
        """The final sample of ``sample_steps`` (same keyword arguments)."""
        x = x_T
        for step in self.sample_steps(denoiser, x_T, **kwargs):
            x = step.prev_sample
        return x


def classifier_free_guidance(
    model: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, null_cond: Tensor, scale: float
) -> Denoiser:
    """A denoiser that mixes conditional and unconditional outputs (Ho & Salimans 2022).

    out = uncond + scale * (cond - uncond): scale 0 is unconditional, 1 conditional, > 1 guided.
    Both halves run as one batch of 2B.
    """

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null_cond]))
        out_cond, out_uncond = both.chunk(2)
        return out_uncond + scale * (out_cond - out_uncond)

    return guided
