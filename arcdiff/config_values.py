"""Config values: JSON checked against the type hints of config dataclass fields, sections built
and overridden (`--set section.key=value`) with errors naming the key and where it came from."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import fields, replace
from typing import Any, Literal

import orjson

from arcdiff.errors import ConfigError


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) with value converted to ``tp`` where that is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, coerced = coerce(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp)
        items = [coerce(v, item_tp) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config field type {tp!r}")


class FieldError(ConfigError):
    """A value failed a section's own check; the loader adds where it came from."""


def check_field(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise FieldError(f"{key} {message}")


def did_you_mean(key: str, known: typing.Iterable[str]) -> str:
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
            raise ConfigError(f"{where}: unknown key '{section}.{key}'{did_you_mean(key, names)}")
        ok, coerced = coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where}: '{section}.{key}' must be {type_name(hints[key])}, got {value!r}"
            )
        values[key] = coerced
    try:
        return cls(**values)
    except FieldError as e:
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
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(key, known)}")
        built[key] = _build_section(sections[key], value, key, where)
    return raw.get("name"), built


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
                f"{where}: unknown section '{section}'{did_you_mean(section, sections)}"
            )
        known = [f.name for f in fields(getattr(cfg, section))]
        if name not in known:
            raise ConfigError(f"{where}: unknown key '{section}.{name}'{did_you_mean(name, known)}")
        values, sets = pending.setdefault(section, ({}, []))
        values[name] = value
        sets.append(where)
    for section, (values, sets) in pending.items():
        built = replace_checked(getattr(cfg, section), section, values, " ".join(sets))
        cfg = replace(cfg, **{section: built})
    return cfg


def replace_checked(
    current: Any, section: str, values: typing.Mapping[str, Any], where: str
) -> Any:
    """A section's dataclass with ``values`` on top, checked as a config file's values are: a
    wrong type or value is a ConfigError naming ``where`` and ``section.key``."""
    merged = {f.name: getattr(current, f.name) for f in fields(current)}
    return _build_section(type(current), {**merged, **values}, section, where)
