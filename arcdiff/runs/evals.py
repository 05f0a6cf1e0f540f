"""Where an evaluation is written in a run directory, and what guards it.

``eval/<split>[@checkpoint][~tag]/``: the split's name; ``@checkpoint`` for any checkpoint but
``final``; ``~tag`` for settings other than the run's own, e.g. ``~steps1-limit1``. The tag is
derived from the evaluation config's fields (``arcdiff.config.setting``'s ``tag``), so a setting
added to EvalConfig is in the folder name, the guard and scores.json without another list.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson

from arcdiff.config import OWN_NAME, EvalConfig
from arcdiff.errors import OutputError

EVAL = "eval"


def tagged_fields(settings: EvalConfig) -> dict[str, str]:
    """{field: short name} of the settings that change what an evaluation predicts."""
    tags = {}
    for f in dataclasses.fields(settings):
        tag = f.metadata.get("tag", OWN_NAME)
        if tag is not None:
            tags[f.name] = f.name if tag == OWN_NAME else tag
    return tags


def settings_tag(settings: EvalConfig, reference: EvalConfig) -> str:
    """The settings that differ from the run's own, e.g. ``steps1-limit1`` ('' if none), as
    sampled: ``--no-maj --num-augs 4`` samples one view and is tagged ``nomaj``."""
    settings, reference = settings.sampled(), reference.sampled()
    parts = []
    for name, short in tagged_fields(settings).items():
        value = getattr(settings, name)
        if name == "num_augs" and not settings.maj:
            continue  # 'nomaj' says it
        if value == getattr(reference, name, None):
            continue
        if isinstance(value, bool):
            parts.append(short if value else f"no{short}")
        else:
            parts.append(f"{short}{value}")
    return "-".join(parts)


def split_dirname(split: str) -> str:
    """'aa1:eval' -> 'aa1_eval'; a path -> its last component."""
    return Path(split.rstrip("/")).name.replace(":", "_") or "split"


def eval_dirname(split: str, checkpoint: str = "final", tag: str = "") -> str:
    """The folder under ``eval/`` of one evaluation (see the module's docstring), so a quick or
    a snapshot evaluation never replaces the run's scores."""
    name = split_dirname(split)
    name = name if checkpoint == "final" else f"{name}@{checkpoint}"
    return f"{name}~{tag}" if tag else name


def eval_dir(root: Path, split: str, checkpoint: str = "final", tag: str = "") -> Path:
    return root / EVAL / eval_dirname(split, checkpoint, tag)


def check_existing(out: Path, described: dict[str, Any], keys: list[str], force: bool) -> None:
    """Refuse to replace ``out``'s scores made with other values of ``keys`` (the settings as
    ``described`` in scores.json), unless ``force``."""
    path = out / "scores.json"
    if force or not path.is_file():
        return
    try:
        saved = orjson.loads(path.read_bytes()).get("settings", {})
    except orjson.JSONDecodeError:
        saved = {}
    for name in keys:
        if name in saved and saved[name] != described.get(name):
            raise OutputError(
                f"{out} holds scores made with {name}={saved[name]!r} "
                f"(now {described.get(name)!r}); pass --force to replace them"
            )
