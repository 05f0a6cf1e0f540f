"""The sampler registry: every way the evaluator can draw output grids, by name.

A sampler runs a whole sampling loop (:class:`Sampler`); :data:`SAMPLERS` builds one from the
evaluation's options, and ``EvalConfig.sampler`` accepts exactly its names. A new sampler is
one entry here; tests/eval/test_samplers.py then runs it through the shared checks.

* ``argmax``: every step feeds the x0 prediction's argmax forward, with a second,
  self-conditioned pass per step (:func:`~arcdiff.eval.sample.sample`); deterministic given
  the initial noise.
* ``ancestral``: every step draws from the exact posterior p(x_s | x_t)
  (:meth:`~arcdiff.diffusion.discrete.DiscreteDiffusion.reverse_step`).
* ``confidence``: the most confident cells are decided first, a few per step
  (:func:`~arcdiff.eval.decode.confidence_sample`), with ``temperature`` and ``remask``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import torch
from torch import Tensor

from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.decode import confidence_sample
from arcdiff.eval.sample import Samples, sample
from arcdiff.model.denoiser import Denoiser


class Sampler(Protocol):
    """A sampling loop: one output grid per input canvas.

    inputs (B, S, S) tokens (PAD outside the grid), task (B,), dihedral (B,); ``num_steps``
    steps of the training grid; noise from ``generator`` (None: torch's global one);
    ``sizes`` (B, 2) fixed output sizes as (h, w), or None to read the size head.
    """

    def __call__(
        self,
        model: Denoiser,
        diffusion: DiscreteDiffusion,
        inputs: Tensor,
        task: Tensor,
        dihedral: Tensor,
        *,
        num_steps: int = ...,
        generator: torch.Generator | None = ...,
        sizes: Tensor | None = ...,
    ) -> Samples: ...


def _argmax(*, temperature: float, remask: bool) -> Sampler:
    return sample  # takes no options


def _ancestral(*, temperature: float, remask: bool) -> Sampler:
    return partial(sample, argmax=False)  # takes no options


def _confidence(*, temperature: float, remask: bool) -> Sampler:
    return partial(confidence_sample, temperature=temperature, remask=remask)


SAMPLERS: dict[str, Callable[..., Sampler]] = {  # name -> builder(*, temperature, remask)
    "argmax": _argmax,
    "ancestral": _ancestral,
    "confidence": _confidence,
}


def sampler_for(name: str, *, temperature: float = 0.0, remask: bool = False) -> Sampler:
    """The sampler an evaluation's ``eval.sampler`` names. ``temperature`` and ``remask``
    shape the samplers that take them (the confidence sampler) and are ignored by the rest."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}")
    return SAMPLERS[name](temperature=temperature, remask=remask)
