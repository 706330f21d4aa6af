"""The configuration and command-line reference, generated from the config tree (docs/reference.md).

Every field of every section, with its TOML key, command-line flag (and which commands take it), type,
default, valid range or choices and help text, read from the dataclasses the CLI, TOML and the Python
API build, so the page cannot drift from the code. A test fails when the committed page is stale.

    python -m listcon.jobs.reference > docs/reference.md
"""

from __future__ import annotations

import dataclasses
import typing

from listcon.jobs.cli import COMMON, HELP, SECTIONS
from listcon.jobs.config import Config
from listcon.schemas.config import describe_range

HEADER = """# Configuration and command-line reference

Generated from the config tree by `python -m listcon.jobs.reference > docs/reference.md`; do not edit by
hand (a test fails when this page and the code disagree). A TOML config (`listcon run CONFIG`) uses the
section and key; each step's command line takes the flags listed for it (`listcon <step> --help`); the
Python API builds the same dataclasses (`listcon.Config(...)`). Loading is strict: an unknown key, a wrong
type, a value outside its choices or its range is a one-line error naming the key.
"""


# the top level's fields are the steps' own arguments (jobs/cli.py adds them by hand)
TOP_LEVEL = {"data": "`DATA` (the positional argument)", "workdir": "`--workdir` (every step)",
             "lance_root": "`--lance-root` (every step)", "split": "`--split` (retrieve, mine, train, rerank, evaluate)"}


def _type(hint) -> str:
    name = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return (name or str(hint).replace("typing.", "").replace("NoneType", "None")).replace("|", "\\|")


def _commands(section: str, field: str) -> list[str]:
    return [command for command, sections in SECTIONS.items()
            if any(s == section and (only is None or field in only) for s, _, only in sections)]


def _section(hint) -> type | None:
    """The dataclass a field's type hint holds (itself, or a tuple's items: ``[[train.extra]]``), else None."""
    inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple and typing.get_args(hint) else hint
    return inner if dataclasses.is_dataclass(inner) else None


def _sections(cls: type, path: str) -> list[tuple[str, type]]:
    """(section path, dataclass) for ``cls`` and every nested dataclass field, depth first."""
    found = [(path, cls)]
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if inner := _section(hints[field.name]):
            found += _sections(inner, f"{path}.{field.name}" if path else field.name)
    return found


def render() -> str:
    lines = [HEADER, "## Commands", "", "| command | what it does |", "|---|---|"]
    lines += [f"| `listcon {command}` | {text} |" for command, text in HELP.items()]
    lines += ["", f"Every step also takes the sections {', '.join(f'`[{s}]`' for s, _, _ in COMMON)}.", ""]
    for path, cls in _sections(Config, ""):
        hints = typing.get_type_hints(cls)
        title = f"`[{path}]`" if path else "top level"
        if path == "train.extra":
            title = "`[[train.extra]]` (a list of tables)"
        lines += [f"## {title}: {cls.__name__}", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                  "| key | flag (commands) | type | default | valid values | what |", "|---|---|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            if _section(hints[field.name]):
                continue  # a nested section: its own table below
            flag = field.metadata.get("flag", True)
            name = flag if isinstance(flag, str) else "--" + field.name.replace("_", "-")
            commands = _commands(path, field.name) if flag else []
            flag_text = f"`{name}` ({', '.join(commands)})" if commands else "(config only)"
            if not path:
                flag_text = TOP_LEVEL[field.name]
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            choices = field.metadata.get("choices")
            valid = " / ".join(f"`{c}`" for c in choices) if choices else describe_range(field)
            help_text = field.metadata.get("help", "").replace("|", "\\|")
            default_text = "" if default in (None, (), "", {}) else f"`{default}`"
            lines.append(f"| `{field.name}` | {flag_text} | `{_type(hints[field.name])}` | {default_text} | {valid} | "
                         f"{help_text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
