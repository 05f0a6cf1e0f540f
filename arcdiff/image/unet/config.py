"""Configuration of an image run (``arcdiff image train --config configs/image_digits.json``).

One frozen dataclass per concern, as arcdiff/config.py: a JSON object with an optional ``name``
and the sections ``data``, ``model``, ``diffusion``, ``train``, ``sample``, ``eval``, ``text``
(prompts of a text-conditioned model), ``vae`` (the autoencoder ``arcdiff image vae`` trains)
and ``latent`` (the VAE run a latent model lives in). Unknown
keys and mistyped values are ConfigErrors naming the key and the file; ``--set
section.key=value`` overrides any field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from arcdiff.config import PRESET_DIR
from arcdiff.config_values import build_sections, check_field, override_sections
from arcdiff.errors import ConfigError
from arcdiff.image.unet.data import IMAGE_DATASETS


@dataclass(frozen=True)
class ImageDataConfig:
    dataset: str = "digits"
    root: str = "data"  # folder holding mnist/, cifar-10-batches-py/, stl10_binary/
    image_size: int | None = None  # resize to this side; None keeps the files' size (digits: 16)
    limit: int | None = None  # first N training images

    def __post_init__(self) -> None:
        check_field(
            self.dataset in IMAGE_DATASETS, "data.dataset", f"must be one of {IMAGE_DATASETS}"
        )
        check_field(
            self.image_size is None or self.image_size >= 4, "data.image_size", "must be >= 4"
        )


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net only (channels, image size and classes come from the data)."""

    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [8])
    num_heads: int = 4
    groups: int = 8
    dropout: float = 0.0
    class_conditional: bool = True
    # classes embedded by a frozen table of prompt embeddings read by cross-attention (text
    # section), instead of a learned label embedding added to the time embedding
    text_conditional: bool = False
    cross_attention_resolutions: list[int] = field(default_factory=lambda: [8])

    def __post_init__(self) -> None:
        check_field(
            not self.text_conditional or self.class_conditional,
            "model.text_conditional",
            "needs model.class_conditional (prompts are made from the class names)",
        )
        check_field(self.base_channels >= 1, "model.base_channels", "must be >= 1")
        check_field(
            self.base_channels % self.groups == 0,
            "model.base_channels",
            f"must be divisible by model.groups={self.groups}",
        )
        check_field(len(self.channel_mults) >= 1, "model.channel_mults", "must not be empty")
        check_field(self.num_res_blocks >= 1, "model.num_res_blocks", "must be >= 1")


@dataclass(frozen=True)
class ImageDiffusionConfig:
    num_timesteps: int = 1000
    schedule: Literal["cosine", "linear", "quadratic"] = "cosine"
    prediction: Literal["eps", "v", "x0"] = "v"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_terminal_snr: bool = False
    clip_x0: float | None = 1.0  # images live in [-1, 1]

    def __post_init__(self) -> None:
        check_field(self.num_timesteps >= 2, "diffusion.num_timesteps", "must be >= 2")
        check_field(
            not (self.zero_terminal_snr and self.prediction == "eps"),
            "diffusion.zero_terminal_snr",
            "needs diffusion.prediction 'v' or 'x0'",
        )


@dataclass(frozen=True)
class ImageTrainConfig:
    steps: int = 1500
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    label_dropout: float = 0.1  # share of labels replaced by the null class (CFG training)
    bf16: bool = True  # autocast on CUDA only
    save_every: int = 500
    log_every: int = 25
    threads: int | None = None
    device: str | None = None  # None: cuda if available, else cpu
    seed: int = 0

    def __post_init__(self) -> None:
        check_field(self.steps >= 1, "train.steps", "must be >= 1")
        check_field(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check_field(self.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        check_field(self.lr > 0, "train.lr", "must be > 0")
        check_field(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
        check_field(0.0 <= self.label_dropout <= 1.0, "train.label_dropout", "must be in [0, 1]")
        check_field(self.save_every >= 1, "train.save_every", "must be >= 1")


@dataclass(frozen=True)
class ImageSampleConfig:
    sampler: Literal["ddpm", "ddim"] = "ddim"
    num_steps: int = 50
    eta: float = 0.0
    spacing: Literal["leading", "trailing", "linspace"] = "trailing"
    guidance_scale: float = 1.0  # 0: unconditional, 1: conditional, > 1: guided
    per_class: int = 8  # columns of the sample grid
    seed: int = 0

    def __post_init__(self) -> None:
        check_field(self.num_steps >= 1, "sample.num_steps", "must be >= 1")
        check_field(self.per_class >= 1, "sample.per_class", "must be >= 1")


@dataclass(frozen=True)
class ImageEvalConfig:
    """The sample-quality metric and the sampler sweep."""

    num_samples: int = 500
    classifier_steps: int = 600
    knn_k: int = 3
    sweep_steps: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 1000])
    sweep_ddpm: bool = True  # also ancestral sampling with every training step
    guidance_scale: float = 1.0  # of the steps sweep (2x the compute when not 1)
    sweep_guidance: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])
    alignment_per_class: int = 30  # class alignment: samples per requested class
    alignment_guidance: float | None = None  # None: sample.guidance_scale

    def __post_init__(self) -> None:
        check_field(
            self.num_samples > self.knn_k + 1, "eval.num_samples", "must be > eval.knn_k + 1"
        )
        check_field(self.classifier_steps >= 1, "eval.classifier_steps", "must be >= 1")
        check_field(self.alignment_per_class >= 1, "eval.alignment_per_class", "must be >= 1")


@dataclass(frozen=True)
class TextConfig:
    """Prompts of a text-conditioned model: one per class, the empty prompt for CFG's null."""

    prompt: str = "a photo of a {class}"
    encoder: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"

    def __post_init__(self) -> None:
        check_field("{class}" in self.prompt, "text.prompt", "must contain '{class}'")


@dataclass(frozen=True)
class VAEConfig:
    """The KL-regularised autoencoder of ``arcdiff image vae`` (architecture and training)."""

    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])  # downsampling 2^(n-1)
    latent_channels: int = 2
    groups: int = 8
    kl_weight: float = 1e-4  # per latent element, against the per-pixel MSE
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100

    def __post_init__(self) -> None:
        check_field(
            self.base_channels % self.groups == 0, "vae.base_channels", "must divide by groups"
        )
        check_field(len(self.channel_mults) >= 1, "vae.channel_mults", "must not be empty")
        check_field(self.latent_channels >= 1, "vae.latent_channels", "must be >= 1")
        check_field(self.kl_weight >= 0, "vae.kl_weight", "must be >= 0")
        check_field(self.steps >= 1, "vae.steps", "must be >= 1")
        check_field(self.batch_size >= 1, "vae.batch_size", "must be >= 1")


@dataclass(frozen=True)
class LatentConfig:
    """Train and sample in the latent space of a VAE run (None: pixel space)."""

    vae_run: str | None = None  # a run directory written by `arcdiff image vae`


@dataclass(frozen=True)
class ImageConfig:
    name: str = "image"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: ImageDiffusionConfig = field(default_factory=ImageDiffusionConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    sample: ImageSampleConfig = field(default_factory=ImageSampleConfig)
    eval: ImageEvalConfig = field(default_factory=ImageEvalConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_consistent(cfg: ImageConfig, where: str) -> ImageConfig:
    """Checks that span sections (run once all overrides are in)."""
    T = cfg.diffusion.num_timesteps
    for steps in [*cfg.eval.sweep_steps, cfg.sample.num_steps]:
        if not 1 <= steps <= T:
            raise ConfigError(
                f"{where}: {steps} sampling steps is not in 1..diffusion.num_timesteps={T}"
            )
    return cfg


SECTIONS: dict[str, type] = {
    "data": ImageDataConfig,
    "model": UNetConfig,
    "diffusion": ImageDiffusionConfig,
    "train": ImageTrainConfig,
    "sample": ImageSampleConfig,
    "eval": ImageEvalConfig,
    "text": TextConfig,
    "vae": VAEConfig,
    "latent": LatentConfig,
}


def image_config_from_dict(raw: Any, where: str = "<config>") -> ImageConfig:
    name, sections = build_sections(raw, SECTIONS, where)
    return check_consistent(ImageConfig(name=name or "image", **sections), where)


def load_image_config(name_or_path: str | Path, overrides: list[str] | tuple = ()) -> ImageConfig:
    """A JSON file (or a preset name in configs/, e.g. ``image_digits``) plus overrides."""
    path = Path(name_or_path)
    if not path.is_file():
        stem = path.name.removesuffix(".json")
        path = PRESET_DIR / f"{stem}.json"
        if not path.is_file():
            presets = sorted(p.stem for p in PRESET_DIR.glob("image_*.json"))
            raise ConfigError(
                f"config '{name_or_path}' is neither a file nor a preset; presets: "
                f"{', '.join(presets)}"
            )
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return apply_image_overrides(image_config_from_dict(raw, str(path)), overrides)


def apply_image_overrides(cfg: ImageConfig, overrides: list[str] | tuple = ()) -> ImageConfig:
    return check_consistent(override_sections(cfg, SECTIONS, overrides), "--set")
