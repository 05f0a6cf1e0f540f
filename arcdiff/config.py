"""Typed configuration: one frozen dataclass per concern, loaded from JSON.

A config file is a JSON object with an optional ``name`` and one object per section
(``data``, ``model``, ``diffusion``, ``train``, ``eval``, ``lora``). Every key is checked
against the dataclass fields: an unknown or mistyped key, or a value of the wrong type, is a
ConfigError naming the key and the file. ``--set section.key=value`` overrides any field.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from arcdiff.config_values import coerce, type_name
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
        _check(1 <= self.max_size <= 30, "data.max_size", "must be in 1..30")
        for key in ("eval_weight", "self_supervised"):
            _check(0.0 <= getattr(self, key) <= 1.0, f"data.{key}", "must be in [0, 1]")
        _check(self.limit is None or self.limit >= 1, "data.limit", "must be >= 1")
        _check(self.val_pairs >= 0, "data.val_pairs", "must be >= 0")
        _check(self.bucket_window >= 0, "data.bucket_window", "must be >= 0")


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
        _check(self.d_model >= 1, "model.d_model", "must be >= 1")
        _check(self.n_heads >= 1, "model.n_heads", "must be >= 1")
        _check(
            self.d_model % self.n_heads == 0,
            "model.d_model",
            f"{self.d_model} is not divisible by model.n_heads={self.n_heads}",
        )
        _check(self.n_layers >= 1, "model.n_layers", "must be >= 1")
        head_dim = self.d_model // self.n_heads
        _check(
            not self.rope or head_dim % 4 == 0,
            "model.rope",
            f"needs d_model / n_heads divisible by 4 (two rotation pairs per axis), got {head_dim}",
        )
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.rope or self.abs_pos, "model.abs_pos",
               "false needs model.rope=true: without either no cell has a position")  # fmt: skip


@dataclass(frozen=True)
class DiffusionConfig:
    """The discrete noising process over output colours."""

    kernel: Literal["uniform", "absorbing"] = "uniform"
    schedule: Literal["cosine", "linear"] = "cosine"
    num_timesteps: int = 128
    size_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        _check(self.num_timesteps >= 1, "diffusion.num_timesteps", "must be >= 1")


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
            _check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        for key in ("lr", "muon_lr"):
            _check(getattr(self, key) > 0, f"train.{key}", "must be > 0")
        for key in ("max_minutes", "checkpoint_minutes"):
            value = getattr(self, key)
            _check(value is None or value >= 0, f"train.{key}", "must be >= 0")
        for key in ("save_every", "horizon_steps", "threads"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"train.{key}", "must be >= 1")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
        _check(0.0 <= self.self_cond_prob <= 1.0, "train.self_cond_prob", "must be in [0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is sampled, voted and scored."""

    split: str = "aa1:eval"
    num_steps: int = 32
    maj: bool = True
    num_augs: int = 8
    limit: int | None = None
    batch_size: int = 256
    use_ema: bool = True
    seed: int = 0
    size_vote: bool = True  # the views of a test input agree on one output size first
    size_prior: bool = True  # the vote weighs the sizes the demonstrations' size rules name
    bf16: bool = True  # bf16 autocast + TF32 on CUDA (no effect on a CPU)
    sampler: Literal["argmax", "ancestral", "confidence"] = "argmax"  # eval/sample.py, decode.py
    samples: int = 1  # draws per augmented view, batched with the views
    temperature: float = 0.0  # confidence sampler: 0 picks argmax colours, > 0 draws them
    remask: bool = False  # confidence sampler: decided cells may be re-noised when unsure
    ranking: Literal["vote", "poe"] = "vote"  # count-then-confidence, or eval/rank.py
    visit_weight: float = 1.0  # poe: bonus per log visit count
    rank_top: int = 8  # poe: the most visited candidates it scores (the rest follow by votes)

    def __post_init__(self) -> None:
        for key in ("num_steps", "num_augs", "batch_size", "samples", "rank_top"):
            _check(getattr(self, key) >= 1, f"eval.{key}", "must be >= 1")
        _check(self.limit is None or self.limit >= 1, "eval.limit", "must be >= 1")
        _check(self.temperature >= 0.0, "eval.temperature", "must be >= 0")
        # settings that would change nothing: one line instead of a silently equal evaluation
        for key, used in (("temperature", self.temperature != 0.0), ("remask", self.remask)):
            value = orjson.dumps(getattr(self, key)).decode()
            _check(self.sampler == "confidence" or not used, f"eval.{key}",
                   f'{value} needs eval.sampler="confidence" (got "{self.sampler}")')  # fmt: skip
        # argmax steps (and confidence at temperature 0) differ between draws only by the
        # starting noise, which carries no information: N draws are N copies of one vote
        _check(self.samples == 1 or self.sampler == "ancestral" or self.temperature > 0.0,
               "eval.samples", f'{self.samples} needs draws that differ: eval.sampler='
               f'"ancestral", or "confidence" with eval.temperature > 0')  # fmt: skip


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
        _check(self.rank >= 1, "lora.rank", "must be >= 1")
        _check(self.steps >= 1, "lora.steps", "must be >= 1")
        _check(0.0 <= self.embed_first < 1.0, "lora.embed_first", "must be in [0, 1)")


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


class _FieldError(ConfigError):
    """A section's own check failed (a ConfigError; a loader adds where it came from)."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _FieldError(f"{key} {message}")


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build_section(cls: type, raw: Any, section: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: section '{section}' must be a JSON object")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{section}.{key}'{_did_you_mean(key, names)}")
        ok, coerced = coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where}: '{section}.{key}' must be {type_name(hints[key])}, got {value!r}"
            )
        values[key] = coerced
    try:
        return cls(**values)
    except _FieldError as e:
        raise ConfigError(f"{where}: {e}") from None


def build_sections(
    raw: Any, sections: typing.Mapping[str, type], where: str
) -> tuple[str | None, dict[str, Any]]:
    """A parsed JSON config object -> (its name or None, {section: built dataclass}).

    Shared by every config family (the ARC config here, the image track's): unknown keys and
    mistyped values are ConfigErrors naming the key and ``where``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a config must be a JSON object")
    built: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "name":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: 'name' must be a non-empty string")
            continue
        if key not in sections:
            known = ["name", *sections]
            raise ConfigError(f"{where}: unknown key '{key}'{_did_you_mean(key, known)}")
        built[key] = _build_section(sections[key], value, key, where)
    return raw.get("name"), built


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
        f"{_did_you_mean(stem, presets)}; presets: {', '.join(presets)}"
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


def parse_override(text: str) -> tuple[str, str, Any]:
    """``train.lr=3e-4`` -> ("train", "lr", 3e-4). Values are JSON, else plain strings."""
    key, sep, value_text = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set '{text}': expected section.key=value, e.g. train.lr=3e-4")
    try:
        value = orjson.loads(value_text)
    except orjson.JSONDecodeError:
        value = value_text
    return section, name, value


def override_sections(
    cfg: Any, sections: typing.Mapping[str, type], overrides: typing.Sequence[str]
) -> Any:
    """Apply ``section.key=value`` overrides to a frozen config of ``sections``; each section
    is built once with all of its overrides (checks across fields see them together)."""
    pending: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for text in overrides:
        section, name, value = parse_override(text)
        where = f"--set {text}"
        if section == "name" or section not in sections:
            raise ConfigError(
                f"{where}: unknown section '{section}'{_did_you_mean(section, sections)}"
            )
        merged, sets = pending.setdefault(section, (dataclasses.asdict(getattr(cfg, section)), []))
        if name not in merged:
            raise ConfigError(
                f"{where}: unknown key '{section}.{name}'{_did_you_mean(name, merged)}"
            )
        merged[name] = value
        sets.append(where)
    for section, (merged, sets) in pending.items():
        built = _build_section(sections[section], merged, section, " ".join(sets))
        cfg = replace(cfg, **{section: built})
    return cfg


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
