"""The import direction jobs -> pipeline -> model -> schemas, and what each layer may not import.

Every ``import`` / ``from ... import`` statement of every module (function-level ones
included) is read with ``ast``, so a lazy import inside a function cannot slip past.
The ``listcon`` front door (jobs/api) sits above jobs and may import any layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["jobs", "pipeline", "model", "schemas"]  # each may import only those after it
FORBIDDEN = {
    "model": {"ray", "lance", "lancedb", "faiss"},
    "schemas": {"ray", "lance", "lancedb", "faiss", "torch", "transformers"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(layer: str) -> list[str]:
    allowed = set(LAYERS[LAYERS.index(layer):])
    out = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        if layer == "jobs" and path.parent.name == "api":
            continue  # the front door re-exports every layer
        for line, module in imports_of(path):
            parts = module.split(".")
            if parts[0] == "listcon" and len(parts) > 1 and parts[1] not in allowed:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module} (layer {layer} may import {sorted(allowed)})")
            if parts[0] in FORBIDDEN.get(layer, ()):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}, forbidden in {layer}/")
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_downward_only(layer):
    assert violations(layer) == []


def test_the_check_catches_a_planted_violation(tmp_path, monkeypatch):
    planted = tmp_path / "model"
    planted.mkdir()
    (planted / "bad.py").write_text("def f():\n    import ray\n    from listcon.pipeline.store import workdir\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("model") == [
        "model/bad.py:2 imports ray, forbidden in model/",
        "model/bad.py:3 imports listcon.pipeline.store (layer model may import ['model', 'schemas'])",
    ]


def test_every_code_package_is_in_the_wheel():
    """Each code folder with an __init__.py is a package the wheel lists and maps (an editable install finds
    an unlisted one anyway; a built wheel would not ship it)."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {Path(folder): name for name, folder in tool["package-dir"].items()}
    found = {mapped.get(path.parent.relative_to(ROOT), str(path.parent.relative_to(ROOT)))
             for layer in ("jobs", "pipeline", "model", "schemas") for path in (ROOT / layer).rglob("__init__.py")}
    assert found <= set(tool["packages"]), f"folders missing from pyproject's packages/package-dir: {found - set(tool['packages'])}"
