"""Writes that readers never see half-done: build beside the target, then swap it in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_dir(staged: str | Path, target: str | Path) -> None:
    """Replace directory ``target`` by ``staged``; the old one is removed only after the swap."""
    staged, target = Path(staged), Path(target)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temp file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
