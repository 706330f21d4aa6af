"""Config records: frozen dataclasses built strictly from plain dicts (TOML, JSON, CLI flags).

Every layer declares its settings as a dataclass; this module turns a dict into one and
refuses anything nobody would read: an unknown key (named with its section and the
nearest valid key), a value of the wrong type, or a value outside a field's choices.
A field's choices and help text live in its metadata (``choice`` / ``option``), so the
CLI reads them from the same place instead of restating them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot be used: says which key, in which section, and why."""


def option(default: Any, help: str = "", *, choices: tuple | None = None, flag: bool | str = True) -> Any:
    """A dataclass field with its help text (and choices) kept beside the default.

    ``flag=False`` keeps a field out of the generated command-line flags (config file only);
    a string names the flag when it is not the field's name (``"--ray-address"``).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choice(default: str, choices: tuple, help: str = "") -> Any:
    """A string field that must be one of ``choices``."""
    return option(default, help, choices=choices)


def choices_of(field: dataclasses.Field) -> tuple | None:
    return field.metadata.get("choices")


def check_choices(config: Any) -> None:
    """Refuse a field value outside its declared choices (for records built in code)."""
    for field in dataclasses.fields(config):
        allowed = choices_of(field)
        value = getattr(config, field.name)
        if allowed and value is not None and value not in allowed:
            raise ConfigError(f"{field.name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def where(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def build(cls: type[T], data: dict, section: str = "") -> T:
    """``cls(**data)`` after checking every key, type and choice; nested dataclasses recurse."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{section or cls.__name__}] must be a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown config key {where(section, key)!r}{hint}")
    values = {key: convert(hints[key], value, where(section, key), known[key]) for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{section or cls.__name__}] {err}") from None


def convert(kind: Any, value: Any, key: str, field: dataclasses.Field | None = None) -> Any:
    """``value`` as type ``kind`` (no silent coercion beyond int -> float), else a ConfigError naming ``key``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        errors = []
        for candidate in options:
            try:
                return convert(candidate, value, key, field)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(kind):
        if dataclasses.is_dataclass(value) and isinstance(value, kind):
            return value
        return build(kind, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        args = typing.get_args(kind)
        item = args[0] if args else Any
        items = [convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a table, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
        allowed = choices_of(field) if field is not None else None
        if allowed and value not in allowed:
            near = difflib.get_close_matches(value, [str(a) for a in allowed], n=1, cutoff=0.5)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config key {key!r} must be one of {', '.join(map(str, allowed))}; got {value!r}{hint}")
        return value
    raise ConfigError(f"config key {key!r} has an unsupported type {kind!r}")


def to_dict(config: Any) -> Any:
    """A config record as plain JSON/TOML-able values (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config
