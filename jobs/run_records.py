"""A run record per job: one JSON line in W/runs.jsonl that a scheduler or a person can read.

Every step (and `listcon run` around them) appends, when it ends however it ends: the step, start
and end time, its status (done, up to date, error, interrupted) with the exit code the command line
gives it, what the step reports it did (its result's counts), the Lance table versions before and
after, the git SHA and a digest of the resolved config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from listcon.jobs.runtime import RECEIVED_SIGNALS, git_sha, stopped_by_signal
from listcon.pipeline.store.lance_tables import open_table
from listcon.schemas import to_dict

log = logging.getLogger(__name__)

EXIT_CODES = {"done": 0, "up to date": 0, "error": 2, "lost node": 3, "interrupted": 130}


def table_versions(work) -> dict[str, int | str]:
    """``{table path relative to the workdir: version}`` for every table that exists. Best effort: a store
    that cannot be listed (the step itself then fails, and says why in its own words) is noted, never raised."""
    versions: dict[str, int | str] = {}
    try:
        for uri in work.tables():
            table = open_table(uri)
            if table is not None:
                versions[uri.removeprefix(str(work.lance_root or work.root)).lstrip("/")] = table.version
    except Exception as err:  # noqa: BLE001 (a record must never fail the job it records)
        versions["unreadable"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
    return versions


def config_digest(config) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _outcome(result) -> dict:
    """The scalar fields of a step's result (counts, flags, paths): what it did, in a line."""
    if not dataclasses.is_dataclass(result):
        return {}
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
            if isinstance(getattr(result, f.name), (int, float, str, bool))}


@contextmanager
def recorded(step: str, config) -> Iterator[dict]:
    """Append ``step``'s record to W/runs.jsonl when the block ends; the caller puts its result in ``["result"]``."""
    work = config.work
    holder: dict = {}
    started = time.time()
    before: dict = {}
    status, error = "done", None
    try:  # a signal may land anywhere from here on, reading the tables included: it is recorded
        before = table_versions(work)
        yield holder
    except Exception as err:
        if stopped_by_signal(err):
            status = "interrupted"
        else:
            status = "lost node" if type(err).__module__.startswith("ray") else "error"
            error = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        outcome = _outcome(holder.get("result"))
        if status == "done" and outcome.get("up_to_date"):
            status = "up to date"
        line = {"step": step, "start": _iso(started), "end": _iso(time.time()),
                "seconds": round(time.time() - started, 3), "status": status,
                "exit": 128 + RECEIVED_SIGNALS[0] if status == "interrupted" and RECEIVED_SIGNALS else EXIT_CODES[status],
                **({"error": error} if error else {}), "result": outcome, "tables_before": before,
                "tables_after": table_versions(work), "git": git_sha(), "config_digest": config_digest(config),
                "pid": os.getpid()}
        work.root.mkdir(parents=True, exist_ok=True)
        with open(work.records, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True, default=str) + "\n")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def read_records(work) -> list[dict]:
    """Every record of W/runs.jsonl, oldest first."""
    if not work.records.is_file():
        return []
    return [json.loads(line) for line in work.records.read_text().splitlines() if line.strip()]
