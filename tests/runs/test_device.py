"""Every random draw happens on the device of the tensor it fills, from a generator made there.

A CPU generator cannot feed ``torch.randint(..., device="cuda")``; on a machine without a GPU
every tensor is on the CPU, so these tests check what makes code portable: torch's random
functions are wrapped, and each generator passed must have been made for a named device, the
device of the draw's output (``torch.Generator()`` with no device is the CPU only by default,
the bug that crashed the size vote on CUDA). On a GPU the same tests also run on CUDA.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from arcdiff.config import load_config
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import KERNELS, DiscreteDiffusion
from arcdiff.errors import ConfigError
from arcdiff.eval.predict import predict_tasks
from arcdiff.eval.sample import sample
from arcdiff.eval.sizes import size_logprobs
from arcdiff.runs import device as device_module
from arcdiff.runs.checkpoint import build_model
from arcdiff.runs.device import (
    cpu_supports_bf16,
    cuda_rng_state,
    fast_math,
    restore_cuda_rng,
    seeded_generator,
)
from arcdiff.train import session as session_module
from arcdiff.train.logging import read_metrics
from arcdiff.train.trainer import train
from tests.conftest import SMALL_TASKS, tiny_overrides

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FUNCTIONS = ("randint", "rand", "randn", "randperm", "multinomial", "bernoulli", "normal")
METHODS = ("random_", "uniform_", "normal_", "bernoulli_", "exponential_", "multinomial")


class NamedGenerator(torch.Generator):
    """A torch.Generator that remembers the device it was made for (None: none was named)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NamedGenerator:
        gen = super().__new__(cls, *args, **kwargs)
        named = args[0] if args else kwargs.get("device")
        gen.named = None if named is None else torch.device(named)
        return gen


class Draws:
    """The random draws made while it is installed: (function, generator's device, output's
    device); the generator's device is None where it was made without naming one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.rows: list[tuple[str, torch.device | None, torch.device]] = []
        monkeypatch.setattr(torch, "Generator", NamedGenerator)
        for name in FUNCTIONS:
            monkeypatch.setattr(torch, name, self._wrap(name, getattr(torch, name), False))
        for name in METHODS:
            monkeypatch.setattr(
                torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name), True)
            )

    def _wrap(self, name: str, real: Callable[..., Any], method: bool) -> Callable[..., Any]:
        @functools.wraps(real)
        def drawn(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            gen = kwargs.get("generator")
            if gen is not None:
                named = getattr(gen, "named", None)
                result = args[0] if method and name.endswith("_") else out
                self.rows.append((name, named, result.device))
            return out

        return drawn

    def misplaced(self) -> list[tuple[str, torch.device | None, torch.device]]:
        return [row for row in self.rows if row[1] != row[2]]


def tiny_model(device: str):
    cfg = load_config(None, tiny_overrides(model__self_condition=True))
    torch.manual_seed(0)
    return cfg, build_model(cfg, len(SMALL_TASKS)).to(device).eval()


def canvases(device: str, n: int = 4, side: int = 5):
    inputs = torch.randint(0, 10, (n, side, side), device=device)
    zeros = torch.zeros(n, dtype=torch.long, device=device)
    return inputs, zeros, zeros


@pytest.mark.parametrize("device", DEVICES)
def test_the_size_vote_draws_its_noise_on_the_inputs_device(monkeypatch, device):
    _, model = tiny_model(device)
    inputs, task, dihedral = canvases(device)
    draws = Draws(monkeypatch)
    logp = size_logprobs(model, DiscreteDiffusion(), inputs, task, dihedral)
    assert logp.device.type == device
    assert [row[0] for row in draws.rows] == ["randint"]  # the noisy canvas
    assert draws.misplaced() == []


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS.values(), ids=list(KERNELS))
def test_the_stochastic_sampler_draws_on_the_inputs_device(monkeypatch, device, kernel):
    _, model = tiny_model(device)
    inputs, task, dihedral = canvases(device)
    draws = Draws(monkeypatch)
    generator = seeded_generator(inputs.device, 0)
    diffusion = DiscreteDiffusion(kernel=kernel)
    out = sample(
        model, diffusion, inputs, task, dihedral, num_steps=3, argmax=False, generator=generator
    )
    assert out.tokens.device.type == device
    assert "multinomial" in {row[0] for row in draws.rows}
    assert draws.misplaced() == []


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_with_the_size_vote_draws_on_its_device(monkeypatch, device):
    _, model = tiny_model(device)
    tasks = load_tasks("aa1:train", ids=SMALL_TASKS[:3])
    index = {task_id: i for i, task_id in enumerate(SMALL_TASKS)}
    draws = Draws(monkeypatch)
    predictions = predict_tasks(
        model,
        DiscreteDiffusion(),
        tasks.tasks,
        index,
        num_steps=2,
        num_augs=2,
        device=torch.device(device),
    )
    assert set(predictions) == set(SMALL_TASKS[:3])
    assert len(draws.rows) >= 2 and draws.misplaced() == []


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_and_validation_draw_on_the_model_device(monkeypatch, device, tmp_path):
    overrides = tiny_overrides(
        model__self_condition=True,
        train__self_cond_prob=0.5,
        train__max_steps=2,
        train__eval_every=2,
        train__grad_accum=2,
    )
    cfg = load_config(None, overrides)
    draws = Draws(monkeypatch)
    result = train(cfg, tmp_path / "run", device=torch.device(device), progress=False)
    assert result.step == 2 and "val_loss" in result.val
    drawn = {row[0] for row in draws.rows}
    assert {"randint", "rand"} <= drawn  # timesteps, corruption, the self-conditioning coin
    assert draws.misplaced() == []


def test_a_generator_is_made_on_the_device_it_is_asked_for():
    gen = seeded_generator(torch.device("cpu"), 7)
    assert gen.device == torch.device("cpu")
    assert torch.equal(
        torch.rand(3, generator=gen), torch.rand(3, generator=seeded_generator("cpu", 7))
    )


def test_cuda_rng_states_are_saved_and_restored_on_cuda_only(monkeypatch):
    assert cuda_rng_state(torch.device("cpu")) == {}
    restore_cuda_rng({"cuda": torch.zeros(4, dtype=torch.uint8)}, torch.device("cpu"))  # no-op
    saved = torch.arange(16, dtype=torch.uint8)
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved)
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device: calls.append((device, state))
    )
    gpu = torch.device("cuda", 1)
    state = cuda_rng_state(gpu)
    assert state == {"cuda": saved}
    restore_cuda_rng({}, gpu)  # a checkpoint from before the states were saved
    assert calls == []
    restore_cuda_rng(state, gpu)
    assert calls == [(gpu, saved)]


def test_fast_math_changes_nothing_on_the_cpu():
    before = torch.backends.cuda.matmul.allow_tf32
    with fast_math(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
        assert torch.backends.cuda.matmul.allow_tf32 == before


def test_cpu_bf16_support_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "avx2", "amx_bf16"})
    assert cpu_supports_bf16()
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "avx512_bf16"})
    assert cpu_supports_bf16()
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    assert not cpu_supports_bf16()


def test_cpu_bf16_on_a_cpu_without_it_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"fpu", "avx2"})
    cfg = load_config(None, tiny_overrides(train__cpu_bf16=True))
    with pytest.raises(ConfigError, match=r"train.cpu_bf16: this CPU has neither AMX nor AVX512"):
        train(cfg, tmp_path / "run", device=torch.device("cpu"), progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with fast_math(torch.device("cpu"), cpu_bf16=False):  # off: fp32 as always
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_cpu_bf16_training_runs_its_forward_in_bf16_and_learns(monkeypatch, tmp_path):
    seen: list[torch.dtype] = []
    real_build = session_module.build_model

    def build_and_watch(cfg, num_tasks):
        model = real_build(cfg, num_tasks)
        model.colour_head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        return model

    monkeypatch.setattr(session_module, "build_model", build_and_watch)
    overrides = tiny_overrides(train__cpu_bf16=True, train__max_steps=30, train__eval_every=30)
    result = train(
        load_config(None, overrides), tmp_path / "run", device=torch.device("cpu"), progress=False
    )
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < sum(losses[:5]) - 0.5  # it learns under autocast
    assert seen[:30] == [torch.bfloat16] * 30  # every training forward, in bf16
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # fp32 master weights
