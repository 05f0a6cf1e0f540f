"""Configuration of a toy2d run (``arcdiff image toy2d [--config FILE] [--set key=value]``).

One flat frozen dataclass, saved as config.json in the run directory, so a run's config.json is
also a ``--config`` file. Keys and values are checked as arcdiff/config.py checks its sections:
an unknown key or a mistyped value is a ConfigError naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arcdiff.config_values import coerce, did_you_mean, type_name
from arcdiff.diffusion import schedules
from arcdiff.errors import ConfigError
from arcdiff.image.embeddings import EMBEDDINGS
from arcdiff.image.gaussian import PREDICTIONS, SAMPLERS
from arcdiff.image.toy2d import data as datasets


@dataclass(frozen=True)
class Toy2dConfig:
    """Everything that defines a toy2d run (saved as config.json in the run directory)."""

    datasets: tuple[str, ...] = datasets.DATASETS
    embeddings: tuple[str, ...] = ("sinusoidal",)
    num_points: int = 100_000
    # training compute: the baseline's 10,000 steps at batch 256 is the budget
    train_steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    ema_decay: float = 0.995
    ema_every: int = 10
    # diffusion
    num_timesteps: int = 100
    # training steps drawn as floor(T * u ** t_power), u ~ U(0, 1): > 1 trains more at low noise
    t_power: float = 2.0
    # quadratic betas, zero terminal SNR, v-prediction: NOTES.md, "Image track, part 1"
    schedule: str = "quadratic"
    prediction: str = "v"
    zero_terminal_snr: bool = True
    # sampling and evaluation
    sampler: str = "ddpm"
    eta: float = 0.0
    sample_steps: int = 100
    spacing: str = "leading"
    eval_samples: int = 10_000
    kl_k: int = 5
    # model
    embedding_dim: int = 128
    hidden_dim: int = 256
    hidden_layers: int = 3
    input_scale: float = 25.0
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default

    def __post_init__(self) -> None:
        for name in self.datasets:
            if name not in datasets.DATASETS:
                raise ConfigError(
                    f"unknown dataset {name!r}; expected one of {', '.join(datasets.DATASETS)}"
                )
        for name in self.embeddings:
            if name not in EMBEDDINGS:
                raise ConfigError(
                    f"unknown embedding {name!r}; expected one of {', '.join(EMBEDDINGS)}"
                )
        checks = [
            (self.schedule in schedules.SCHEDULES, "schedule", ", ".join(schedules.SCHEDULES)),
            (self.prediction in PREDICTIONS, "prediction", ", ".join(PREDICTIONS)),
            (self.sampler in SAMPLERS, "sampler", ", ".join(SAMPLERS)),
            (self.spacing in schedules.SPACINGS, "spacing", ", ".join(schedules.SPACINGS)),
            (self.train_steps >= 1, "train_steps", ">= 1"),
            (self.t_power > 0, "t_power", "> 0"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (1 <= self.sample_steps <= self.num_timesteps, "sample_steps", "1..num_timesteps"),
            (self.eval_samples > self.kl_k, "eval_samples", "> kl_k"),
            (self.num_points > self.kl_k + 1, "num_points", "> kl_k + 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"toy2d {key} = {getattr(self, key)!r}: expected {expected}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_value(key: str, value: Any, tp: Any, where: str) -> Any:
    """``value`` as the type of field ``key``; tuples are read from JSON lists."""
    if typing.get_origin(tp) is tuple:
        tp = list[typing.get_args(tp)[0]]
    ok, coerced = coerce(value, tp)
    if not ok:
        raise ConfigError(f"{where}: '{key}' must be {type_name(tp)}, got {value!r}")
    return tuple(coerced) if isinstance(coerced, list) else coerced


def checked_fields(raw: Any, where: str) -> dict[str, Any]:
    """A parsed JSON object's fields, each a known key with a value of the field's type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a toy2d config must be a JSON object")
    hints = typing.get_type_hints(Toy2dConfig)
    values = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(key, hints)}")
        values[key] = _field_value(key, value, hints[key], where)
    return values


def load_toy2d_config(path: Path | None) -> Toy2dConfig:
    """The JSON file's fields over the defaults (the defaults alone for None)."""
    if path is None:
        return Toy2dConfig()
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return Toy2dConfig(**checked_fields(raw, str(path)))


def apply_toy2d_overrides(cfg: Toy2dConfig, overrides: typing.Sequence[str]) -> Toy2dConfig:
    """``key=value`` overrides (``train_steps=300``, ``datasets=["dino"]``), all applied at
    once, so ``num_timesteps=50`` and ``sample_steps=50`` may come in either order. Values are
    JSON, else plain strings."""
    values: dict[str, Any] = {}
    for text in overrides:
        key, sep, value_text = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{text}': expected key=value, e.g. train_steps=300")
        try:
            value = orjson.loads(value_text)
        except orjson.JSONDecodeError:
            value = value_text
        values.update(checked_fields({key.strip(): value}, f"--set {text}"))
    return dataclasses.replace(cfg, **values)
