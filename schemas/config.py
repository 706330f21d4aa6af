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


def option(default: Any, help: str = "", *, choices: tuple | None = None, flag: bool | str = True,
           at_least: float | None = None, above: float | None = None, at_most: float | None = None) -> Any:
    """A dataclass field with its help text, choices and valid range kept beside the default.

    ``flag=False`` keeps a field out of the generated command-line flags (config file only);
    a string names the flag when it is not the field's name (``"--ray-address"``). ``at_least`` /
    ``above`` / ``at_most`` bound a number (``check_ranges``); every float must be finite.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "flag": flag,
                "range": (at_least, above, at_most)}
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


def describe_range(field: dataclasses.Field) -> str:
    """The valid values of a numeric field in words ("" when it declares no bound)."""
    at_least, above, at_most = field.metadata.get("range", (None, None, None))
    parts = [f"at least {at_least:g}" if at_least is not None else "", f"above {above:g}" if above is not None else "",
             f"at most {at_most:g}" if at_most is not None else ""]
    return " and ".join(p for p in parts if p)


def check_ranges(config: Any, section: str = "", recurse: bool = False) -> None:
    """Refuse a number outside its field's declared range, and any NaN or infinite float, naming the key
    (``recurse``: nested records too). One rule for TOML, flags and records built in code."""
    import math

    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = where(section, field.name)
        if recurse and dataclasses.is_dataclass(value):
            check_ranges(value, key, recurse)
            continue
        if recurse and isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                check_ranges(item, f"{key}[{i}]", recurse)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        at_least, above, at_most = field.metadata.get("range", (None, None, None))
        bounded = describe_range(field)
        if (isinstance(value, float) and not math.isfinite(value)) or (at_least is not None and value < at_least) \
                or (above is not None and value <= above) or (at_most is not None and value > at_most):
            expected = f"a finite number{' ' + bounded if bounded else ''}" if isinstance(value, float) or not bounded \
                else f"an integer {bounded}"
            raise ConfigError(f"{key} must be {expected}; got {value!r}")


def where(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def build(cls: type[T], data: dict, section: str = "") -> T:
    """``cls(**data)`` after checking every key, type and choice; nested dataclasses recurse."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{section or cls.__name__}] must be a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key in getattr(cls, "RETIRED", {}):
            raise ConfigError(f"config key {where(section, key)!r} was {cls.RETIRED[key]}")
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown config key {where(section, key)!r}{hint}")
    values = {key: convert(hints[key], value, where(section, key), known[key]) for key, value in data.items()}
    try:
        record = cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{section or cls.__name__}] {err}") from None
    check_ranges(record, section)
    return record


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
