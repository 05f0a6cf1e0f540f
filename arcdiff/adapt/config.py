"""The base run an adaptation starts from, and the config it adapts with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson

from arcdiff.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_config_path,
)
from arcdiff.errors import CheckpointError
from arcdiff.runs.checkpoint import LoadedRun, first_difference

MODES = ("shared", "per-task", "embeddings-only", "full")
LORA_MODES = ("shared", "per-task")
BASE_SECTIONS = ("model", "diffusion", "data")  # what the base run was built and trained with


def lora_config(
    base: LoadedRun, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The base run's config with a lora config file's sections and ``--set`` overrides on top.

    The model, diffusion and data sections describe the base run: a file or override that
    changes one of them is a CheckpointError naming the first differing key.
    """
    own = load_config(config)  # an unknown key or a bad value is a ConfigError here
    merged = config_to_dict(base.cfg)
    if config is not None:
        raw = orjson.loads(resolve_config_path(config).read_bytes())
        for section, values in raw.items():
            if section != "name":
                merged[section] = {**merged[section], **values}
    where = str(config) if config is not None else "--set"
    cfg = apply_overrides(config_from_dict(merged, where), overrides)
    cfg = replace(cfg, name=own.name if config is not None else f"{base.cfg.name}_lora")
    saved, now = config_to_dict(base.cfg), config_to_dict(cfg)
    for section in BASE_SECTIONS:
        diff = first_difference(saved[section], now[section], f"{section}.")
        if diff:
            raise CheckpointError(
                f"{where} does not match the base run {base.run_dir}: {diff} (an adaptation "
                "keeps the base's model, diffusion and data settings)"
            )
    return cfg


def with_mode(cfg: Config, mode: str) -> Config:
    """``cfg`` with ``lora.mode`` set; an unknown mode is a ConfigError."""
    return apply_overrides(cfg, [f"lora.mode={mode}"])
