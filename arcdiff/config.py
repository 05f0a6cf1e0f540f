"""Typed configuration: one frozen dataclass per concern, loaded from JSON.

A config file is a JSON object with an optional ``name`` and one object per section
(``data``, ``model``, ``diffusion``, ``train``, ``eval``, ``lora``). Every key is checked
against the dataclass fields: an unknown or mistyped key, or a value of the wrong type, is a
ConfigError naming the key and the file. ``--set section.key=value`` overrides any field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from arcdiff.config_values import (
    build_sections,
    check_field,
    did_you_mean,
    override_sections,
)
from arcdiff.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
NUM_COLOURS = 10  # an ARC grid holds colours 0-9: what the data, the model and the kernels share


@dataclass(frozen=True)
class DataConfig:
    """Which tasks to train on and how training examples are drawn."""

    # Train-split sources contribute all their pairs (demonstrations and solved tests).
    train_sources: list[str] = field(default_factory=lambda: ["aa1:train"])
    # Eval-split sources contribute their demonstration pairs only; never their test outputs.
    eval_sources: list[str] = field(default_factory=lambda: ["aa1:eval"])
    max_size: int = 30  # canvas side; tasks with a larger demonstration or test input are dropped
    ids: list[str] | None = None  # keep only these task ids
    # tasks kept out of training entirely: task ids, or sources such as "aa1:eval@unseen"
    # whose every task is kept out (data/holdout.py); `arcdiff solve` meets them first
    exclude_ids: list[str] = field(default_factory=list)
    limit: int | None = None  # keep the first N tasks of each source
    eval_weight: float = 0.5  # share of training examples drawn from eval-split demonstrations
    augment: bool = True  # a fresh random dihedral transform + colour permutation per example
    permute_background: bool = False  # colour permutations also move colour 0
    val_pairs: int = 64  # demonstration pairs of train-split tasks held out for validation
    # > 1: draw this many batches at once, sort them by grid size into batches and crop each
    # batch's canvases to its largest grid (a 3x3 task stops paying for 10x10 tokens); the
    # sampler then crops each test input's canvas to its task's grids. 0 or 1: full canvases.
    bucket_window: int = 0
    # share of examples that denoise one grid alone (input slot empty): every input grid of
    # every task, eval test inputs included (never a test output)
    self_supervised: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_field(1 <= self.max_size <= 30, "data.max_size", "must be in 1..30")
        for key in ("eval_weight", "self_supervised"):
            check_field(0.0 <= getattr(self, key) <= 1.0, f"data.{key}", "must be in [0, 1]")
        check_field(self.limit is None or self.limit >= 1, "data.limit", "must be >= 1")
        check_field(self.val_pairs >= 0, "data.val_pairs", "must be >= 0")
        check_field(self.bucket_window >= 0, "data.bucket_window", "must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the transformer denoiser (and nothing else)."""

    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    input_colour: bool = True  # output cells also embed the input colour at their position
    self_condition: bool = True
    sc_temperature: float = 1.5
    sc_gate_init: float = 0.3
    size_copy: bool = False  # size head also has "input height" / "input width" classes
    rope: bool = False  # attention rotates queries and keys by each cell's row and column
    abs_pos: bool = True  # learned absolute row and column embeddings

    def __post_init__(self) -> None:
        check_field(self.d_model >= 1, "model.d_model", "must be >= 1")
        check_field(self.n_heads >= 1, "model.n_heads", "must be >= 1")
        check_field(
            self.d_model % self.n_heads == 0,
            "model.d_model",
            f"{self.d_model} is not divisible by model.n_heads={self.n_heads}",
        )
        check_field(self.n_layers >= 1, "model.n_layers", "must be >= 1")
        head_dim = self.d_model // self.n_heads
        check_field(
            not self.rope or head_dim % 4 == 0,
            "model.rope",
            f"needs d_model / n_heads divisible by 4 (two rotation pairs per axis), got {head_dim}",
        )
        check_field(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        check_field(
            self.rope or self.abs_pos,
            "model.abs_pos",
            "false needs model.rope=true: without either no cell has a position",
        )


@dataclass(frozen=True)
class DiffusionConfig:
    """The discrete noising process over output colours."""

    kernel: Literal["uniform", "absorbing"] = "uniform"
    schedule: Literal["cosine", "linear"] = "cosine"
    num_timesteps: int = 128
    size_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        check_field(self.num_timesteps >= 1, "diffusion.num_timesteps", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpointing and logging of a training run."""

    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: the blocks' matrices; AdamW the rest
    muon_lr: float = 0.02
    warmup_steps: int = 100
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    max_steps: int = 1000
    max_minutes: float | None = None
    # where the LR cosine ends; None: max_steps, or under max_minutes the steps the budget buys
    # at the rate measured over the warmup (train/horizon.py), written back here once fixed
    horizon_steps: int | None = None
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    self_cond_prob: float = 0.5
    eval_every: int = 250
    quick_eval_every: int | None = None  # pass@2 on a few eval tasks every N steps (pipeline)
    quick_eval_tasks: int = 16
    save_every: int | None = None
    checkpoint_minutes: float | None = 2.0  # last.pt by the clock too (None or 0: off)
    snapshot_minutes: list[float] = field(default_factory=list)  # checkpoints/min_<M>.pt
    bf16: bool = True  # bf16 autocast + TF32 on CUDA
    cpu_bf16: bool = False  # bf16 autocast on a CPU with AMX or AVX512-BF16 (else an error)
    compile: bool = False
    threads: int | None = None  # torch CPU threads (None: every core the process may use)
    seed: int = 0
    wandb: bool = False
    wandb_project: str = "arcdiff"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"

    def __post_init__(self) -> None:
        for key in ("batch_size", "grad_accum", "max_steps", "eval_every"):
            check_field(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        for key in ("lr", "muon_lr"):
            check_field(getattr(self, key) > 0, f"train.{key}", "must be > 0")
        for key in ("max_minutes", "checkpoint_minutes"):
            value = getattr(self, key)
            check_field(value is None or value >= 0, f"train.{key}", "must be >= 0")
        for key in ("save_every", "horizon_steps", "threads"):
            value = getattr(self, key)
            check_field(value is None or value >= 1, f"train.{key}", "must be >= 1")
        check_field(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
        check_field(0.0 <= self.self_cond_prob <= 1.0, "train.self_cond_prob", "must be in [0, 1]")


OWN_NAME = "<name>"  # setting(tag=...): the field's own name


def setting(
    default: Any, help: str, *, tag: str | None = OWN_NAME, option: str | None = None
) -> Any:
    """An EvalConfig field: its default, its help, its short name in an evaluation folder's tag
    (by default the field's name; ``""``: the value alone, as in ``poe``; None: untagged, as it
    does not change what is predicted) and,
    for the few on the command line, the option (``"--num-steps"``; ``"--maj/--no-maj"`` for a
    flag). Everything else derives from these: the CLI options, the folder tag, the overwrite
    guard and the settings in scores.json."""
    return field(default=default, metadata={"help": help, "tag": tag, "option": option})


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is sampled, voted and scored: every evaluation setting, declared
    once (:func:`setting`); ``--set eval.KEY=VALUE`` reaches those without an option."""

    split: str = setting(
        "aa1:eval",
        "Tasks to evaluate: a source, folder or Kaggle file.",
        tag=None,
        option="--split",
    )
    num_steps: int = setting(32, "Sampling steps.", tag="steps", option="--num-steps")
    maj: bool = setting(True, "Vote over augmentations.", option="--maj/--no-maj")
    num_augs: int = setting(
        8, "Augmentations per test input with --maj.", tag="augs", option="--num-augs"
    )
    limit: int | None = setting(None, "Evaluate the first N tasks only.", option="--limit")
    batch_size: int = setting(256, "Rows per denoiser call.", tag=None)
    use_ema: bool = setting(
        True, "Sample with the EMA weights.", tag="ema", option="--ema/--no-ema"
    )
    seed: int = setting(0, "Seed of the views and the noise.")
    size_vote: bool = setting(
        True, "The views of a test input agree on one output size first.", tag="sizevote"
    )
    size_prior: bool = setting(
        True, "The vote weighs the sizes the demonstrations' size rules name.", tag="sizeprior"
    )
    bf16: bool = setting(True, "bf16 autocast + TF32 on CUDA (no effect on a CPU).")
    sampler: Literal["argmax", "ancestral", "confidence"] = setting(
        "argmax",
        "argmax (deterministic steps), ancestral (posterior draws) or confidence (most "
        "confident cells first).",
        tag="",
        option="--sampler",
    )
    samples: int = setting(
        1, "Draws per augmented view, batched with the views.", option="--samples"
    )
    temperature: float = setting(
        0.0,
        "Confidence sampler: 0 takes argmax colours, > 0 draws them.",
        tag="temp",
        option="--temperature",
    )
    remask: bool = setting(
        False, "Confidence sampler: decided cells may be redrawn.", option="--remask/--no-remask"
    )
    ranking: Literal["vote", "poe"] = setting(
        "vote",
        "vote (count, then confidence) or poe (product of experts over the views).",
        tag="",
        option="--ranking",
    )
    distinct_attempts: bool = setting(
        True,
        "Attempt 2 differs from attempt 1: a lone voted grid gets the views' best runner-up.",
        tag="distinct",
    )
    visit_weight: float = setting(
        1.0, "poe ranking: bonus per log(1 + visits).", tag="visits", option="--visit-weight"
    )
    rank_top: int = setting(
        8, "poe ranking: how many of the most visited it scores.", tag="top", option="--rank-top"
    )

    def __post_init__(self) -> None:
        for key in ("num_steps", "num_augs", "batch_size", "samples", "rank_top"):
            check_field(getattr(self, key) >= 1, f"eval.{key}", "must be >= 1")
        check_field(self.limit is None or self.limit >= 1, "eval.limit", "must be >= 1")
        check_field(self.temperature >= 0.0, "eval.temperature", "must be >= 0")
        # settings that would change nothing: one line instead of a silently equal evaluation
        for key, used in (("temperature", self.temperature != 0.0), ("remask", self.remask)):
            value = orjson.dumps(getattr(self, key)).decode()
            check_field(
                self.sampler == "confidence" or not used,
                f"eval.{key}",
                f'{value} needs eval.sampler="confidence" (got "{self.sampler}")',
            )
        # argmax steps (and confidence at temperature 0) differ between draws only by the
        # starting noise, which carries no information: N draws are N copies of one vote
        check_field(
            self.samples == 1 or self.sampler == "ancestral" or self.temperature > 0.0,
            "eval.samples",
            f'{self.samples} needs draws that differ: eval.sampler="ancestral", or '
            '"confidence" with eval.temperature > 0',
        )

    def sampled(self) -> EvalConfig:
        """The settings as sampled: without the vote (``maj`` off) there is one view."""
        return self if self.maj else replace(self, num_augs=1)


@dataclass(frozen=True)
class LoraConfig:
    """Adapting a trained model to unseen tasks."""

    mode: Literal["shared", "per-task", "embeddings-only", "full"] = "shared"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["qkv", "proj", "fc1", "fc2"])
    steps: int = 200  # under a clock budget (`arcdiff solve --minutes`): the most it takes
    lr: float = 1e-3
    batch_size: int = 32
    # share of the steps (or of the minutes) in which only the new task rows train, before
    # the mode's weights join them; 0: everything from the start
    embed_first: float = 0.0
    augment: bool = True  # a fresh random dihedral transform + colour permutation per example

    def __post_init__(self) -> None:
        check_field(self.rank >= 1, "lora.rank", "must be >= 1")
        check_field(self.steps >= 1, "lora.steps", "must be >= 1")
        check_field(0.0 <= self.embed_first < 1.0, "lora.embed_first", "must be in [0, 1)")


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    name: str = "arcdiff"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "lora": LoraConfig,
}


def config_from_dict(raw: Any, where: str = "<config>") -> Config:
    """Build a Config from a parsed JSON object; ``where`` names the source in errors."""
    name, sections = build_sections(raw, SECTIONS, where)
    return Config(name=name or "arcdiff", **sections)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path that exists, else a preset in configs/ (``smol_aa1`` or ``smol_aa1.json``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".json") else path.name
    preset = PRESET_DIR / f"{stem}.json"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a preset"
        f"{did_you_mean(stem, presets)}; presets: {', '.join(presets)}"
    )


def load_config(name_or_path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a config file (or the defaults when None) and apply ``section.key=value`` overrides."""
    if name_or_path is None:
        raw: dict[str, Any] = {}
        where = "<defaults>"
    else:
        path = resolve_config_path(name_or_path)
        where = str(path)
        try:
            raw = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e})") from None
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
    return apply_overrides(config_from_dict(raw, where), overrides)


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    return override_sections(cfg, SECTIONS, overrides)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as indented JSON (atomically: tmp file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(orjson.dumps(config_to_dict(cfg), option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; a failed write leaves nothing
