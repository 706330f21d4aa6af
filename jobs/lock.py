"""One writer per workdir: scheduled runs that overlap queue up or fail clearly, never interleave.

Every step takes an exclusive ``flock`` on ``W/.listcon.lock`` for its whole run. Two embeds at
once used to both write rows for the same ids (220 rows for 150 passages, never repaired); two
reranks of a split deleted each other's shard directory. A second job now fails at once
naming the holder (job, pid, host, since when), or with ``--wait`` waits for it. The kernel
drops the lock when its holder dies, so a killed job never leaves a stale lock behind. The
lock is re-entrant within a process (``listcon run`` holds it across its steps).

It covers jobs that share the workdir on one machine or on a filesystem with working
``flock`` (local disks; not every NFS setup). Lance tables under an object-store
``lance_root`` written from two machines rely on Lance's own commit conflict detection.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from listcon.schemas import option

log = logging.getLogger(__name__)

LOCK_FILE = ".listcon.lock"
_held: dict[str, int] = {}  # workdirs this process holds, with the nesting depth


class WorkdirLocked(RuntimeError):
    """Another job is writing the workdir."""


@dataclass(frozen=True)
class LockOptions:
    """What a job does when another job is writing its workdir."""

    wait: bool = option(False, "wait for another listcon job writing this workdir (default: fail at once)")


@contextmanager
def workdir_lock(root: Path, job: str, wait: bool = False) -> Iterator[None]:
    """Hold the workdir's writer lock for the block (re-entrant within this process)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise WorkdirLocked(f"workdir {root} is being written by {holder}; run again when it is done, "
                                    "or pass --wait to queue behind it") from None
            log.info("%s: waiting for %s to finish with %s", job, holder, root)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # from the moment it is held: a stop while naming the holder still clears the name
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"job": job, "pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            _held[key] = 1
            yield
        finally:
            _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    if not info:
        return "another listcon job"
    return f"listcon {info.get('job')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


def locked(job: str) -> Callable:
    """Run a step function ``fn(config, ...)`` holding its workdir's lock."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(config, *args, **kwargs):
            from listcon.jobs.run_records import recorded

            with workdir_lock(config.work.root, job, config.lock.wait), recorded(job, config) as record:
                record["result"] = fn(config, *args, **kwargs)
                return record["result"]

        return run

    return decorate
