"""Layered configuration: code defaults <- a params file section <- ``key=value`` overrides.

The resolved config is written next to every output (``resolved_config.json``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from dinoseg.io import InputError

T = TypeVar("T")


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Convert a string/YAML value to the type of the field's default."""
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, (int, float)) and not isinstance(value, (list, tuple)):
            return type(default)(value)
        if isinstance(default, (list, tuple)):
            if isinstance(value, str):
                value = _yaml_list(value)
            inner = type(default[0]) if default else str
            return type(default)(inner(v) for v in value)
        if isinstance(default, dict) and isinstance(value, str):
            value = _yaml_value(value)
            if not isinstance(value, dict):
                raise ValueError(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"config {key}={value!r}: expected {type(default).__name__}") from e
    return value


def _yaml_value(text: str) -> Any:
    """A YAML flow value from the command line (``[a, b]``, ``{k: 1}``)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(text) from e


def _yaml_list(text: str) -> list[Any]:
    """``a,b`` / ``a b`` / ``[a, b]`` (YAML) -> a list."""
    if text.lstrip().startswith("["):
        value = _yaml_value(text)
        if not isinstance(value, list):
            raise ValueError(text)
        return value
    return [v for v in text.replace(",", " ").split() if v]


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["lr=0.001", "steps=10"]`` -> ``{"lr": "0.001", "steps": "10"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def load_params(path: str | Path | None, section: str | None) -> dict[str, Any]:
    """Read ``section`` of a YAML params file (``{}`` when no file is given)."""
    if path is None:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"params file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if section:
        data = data.get(section) or {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: section {section!r} must be a mapping")
    return data


def resolve(cls: type[T], *layers: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from its defaults updated by each layer in turn.

    Unknown keys are an error (a typo must not be silently ignored).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    defaults = cls()
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in fields:
                raise InputError(f"unknown config key {key!r}; known: {', '.join(sorted(fields))}")
            values[key] = _coerce(value, getattr(defaults, key), key)
    return dataclasses.replace(defaults, **values)  # type: ignore[type-var]


def resolve_cli(cls: type[T], args: Any, section: str, flags: Sequence[str]) -> T:
    """The layered config of a CLI command: ``cls`` defaults <- ``args.params`` section <- the
    named flags that were given (``None`` = not given; ``--smoke`` only when set) <-
    ``args.overrides`` (``KEY=VALUE``)."""
    given = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    if getattr(args, "smoke", False):
        given["smoke"] = True
    return resolve(cls, load_params(args.params, section), given, parse_overrides(args.overrides))


def save_resolved(config: Any, out_dir: str | Path, name: str = "resolved_config.json") -> Path:
    """Write a dataclass config as JSON into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2, default=str))
    return path
