"""A package's public names, imported on first use (PEP 562), so that importing the package, or a
light part of it, does not import the heavy rest (``listcon status`` answers without torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, where: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose names live in the modules ``where`` maps them to."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value  # later lookups find it without coming here
        return value

    def dir_() -> list[str]:
        return sorted({*where, *(n for n in namespace if not n.startswith("_"))})

    return getattr_, dir_
