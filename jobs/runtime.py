"""Process setup shared by every job: logging, the resolved config, and Ray."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import re
import select
import secrets
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

log = logging.getLogger("listcon")

# Ray and tokenizers only: whether the Hugging Face Hub may be reached is the user's call
# (HF_HUB_OFFLINE); local model directories never touch it.
# (transformers reads its verbosity, and huggingface_hub whether to draw progress bars, when imported)
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# Ray Data's notices ("Progress bars disabled", "execution finished") stay out of a normal run unless -v.
# (The core worker's C++ lines are held back by ``native_log_lines_held_back``: setting
# RAY_BACKEND_LOG_LEVEL to hide them prints a C++ line of its own.)
QUIET_UNLESS_VERBOSE = {"RAY_DATA_LOG_LEVEL": "ERROR"}


def setup_logging(verbose: bool = False) -> None:
    """listcon logs at INFO (DEBUG with -v); Ray Data's and transformers' chatter stays down."""
    for key, value in {**QUIET_ENV, **({} if verbose else QUIET_UNLESS_VERBOSE)}.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message="lance is not fork-safe")  # Ray forks nothing lance holds
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _quiet_loggers()


# A line of Ray's C++ logger: "[2026-12-06 22:30:07,146 E 28516 28516] core_worker.cc:2465: ...".
RAY_NATIVE_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] \w+\.(cc|h):\d+: ")


@contextlib.contextmanager
def native_log_lines_held_back(enabled: bool = True):
    """Keep Ray's C++ log lines off this process's stderr while the block runs; everything else passes.

    Ray's core worker in the driver writes its error-level lines (e.g. that an actor pool's constructor
    arguments live in the object store) straight to file descriptor 2, below Python's logging; the same
    lines are in Ray's own driver log (``/tmp/ray/session_*/logs/python-core-driver-*.log``). File
    descriptor 2 is pointed at a pipe; a thread passes every line on as it arrives (a line without its
    end yet, such as a progress bar's, at once unless it may be the start of one of Ray's) and drops
    Ray's. On leaving, descriptor 2 is put back and what the pipe still held is passed on.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    done = threading.Event()

    def forward(data: bytes) -> bytes:
        *lines, rest = re.split(rb"(?<=[\n\r])", data)
        if rest and not (rest.startswith(b"[") and len(rest) < 4096):  # not one of Ray's lines, or too long to be one
            lines, rest = [*lines, rest], b""
        out = b"".join(line for line in lines if not RAY_NATIVE_LINE.match(line))
        if out:
            os.write(saved, out)
        return rest

    def pump() -> None:
        pending = b""
        while True:
            # Whether the block had ended, read *before* looking: all it wrote is in the pipe by then, so an empty
            # look after it means the end (the pipe never reaches EOF: Ray's daemons inherited its write end).
            finished = done.is_set()
            ready, _, _ = select.select([read_end], [], [], 0 if finished else 0.05)
            if not ready:
                if finished:
                    break
                continue
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            pending = forward(pending + chunk)
        if pending and not RAY_NATIVE_LINE.match(pending):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="listcon-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the thread reads what is left, then stops
        done.set()
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)


# glibc's malloc gives each thread that contends for the heap an arena of its own (up to 8 per
# core) and keeps what is freed there for reuse. A long step that frees as much as it allocates
# (retrieval: a few MB of scores per query, a batch of tables per 256 queries, over Lance's and
# FAISS's thread pools) then grows its resident memory with the work done, not with what it
# holds: 1,079 -> 1,273 MiB over 5,000 queries at 100k passages, measured. Fewer arenas and
# handing freed pages back after each batch keep it flat.
HEAP_ARENAS = 2
_M_ARENA_MAX = -8


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def bound_heap() -> None:
    """Cap glibc malloc's arenas for this process (a no-op elsewhere); call before the work starts."""
    if (libc := _libc()) is not None:
        libc.mallopt(_M_ARENA_MAX, HEAP_ARENAS)


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


def _quiet_loggers() -> None:
    for noisy in ("ray", "ray.data", "ray.train", "filelock", "urllib3", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def git_sha() -> str | None:
    """The commit the code runs from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def log_config(job: str, config) -> None:
    """Log a job's fully resolved configuration (a config record or a dict) and the git SHA, once, at start."""
    from listcon.schemas import to_dict

    log.info("%s config (git %s): %s", job, git_sha(), json.dumps(to_dict(config), sort_keys=True, default=str))


# What Lance and pyarrow read to reach an object store; workers on other nodes need the driver's.
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def storage_env() -> dict[str, str]:
    """The object-store settings in this process's environment (endpoint, region, credentials)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


# Signal handlers of the command line's own (SIGINT/SIGTERM -> a clean stop); ray.init installs C++
# handlers over them (SIGTERM then aborts the process with a stack dump), so start_ray puts them back.
JOB_SIGNAL_HANDLERS: dict = {}
RECEIVED_SIGNALS: list[int] = []  # the signals that stopped the job (Ray may re-raise one as a bare KeyboardInterrupt)


def stopped_by_signal(err: BaseException) -> bool:
    """Whether ``err`` ends the job because a stop signal arrived: the KeyboardInterrupt the handler raises, or
    whatever a library turned it into (lance re-raises one from a stream it pulls as an ``OSError``; Ray may
    re-raise one as its own error). Any error once a signal has arrived is the stop, not a failure to report."""
    return isinstance(err, KeyboardInterrupt) or bool(RECEIVED_SIGNALS)


CONNECT_TIMEOUT_S = 15.0  # how long a cluster address may take to answer before the job gives up


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A bounded wait for a cluster's address (``host:port`` or ``ray://host:port``): Ray itself retries an
    unreachable one for ever. ``auto`` (the cluster this machine belongs to) is left to Ray."""
    import socket

    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r} is not host:port (e.g. 10.0.0.5:6379, or ray://host:10001, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"no Ray cluster answers at --ray-address {address} ({err.strerror or err}; waited at "
                              f"most {timeout:g} s); check the head node's address and port") from None


def start_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 512,
              progress_bars: bool = False) -> None:
    """Start a quiet local Ray (or attach to ``address``); reuse one already started in-process.

    On a cluster, the job's workers get the driver's object-store settings (``storage_env``), so
    actors on other nodes read and write the same ``lance_root`` with the same credentials. A
    local Ray is the job's own: it requires a token only this process and its workers hold
    (``private_ray_auth``), since Ray's servers listen on every interface.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not address:
        private_ray_auth()
    import ray

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if address:
            check_reachable(address)
            if env := storage_env():
                kwargs["runtime_env"] = {"env_vars": env}
            ray.init(address=address, **kwargs)
        else:
            # The daemons of the job's own Ray inherit SIGTERM blocked (Ray blocks SIGINT in them itself): a
            # SIGTERM to the job's process group then stops the driver, which shuts them down in order,
            # instead of killing the raylet under it (the driver's core worker then exits 1 mid-step).
            masked = JOB_SIGNAL_HANDLERS and threading.current_thread() is threading.main_thread()
            if masked:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                         object_store_memory=object_store_mb * 2**20, **kwargs)
            finally:
                if masked:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if threading.current_thread() is threading.main_thread():
            for signum, handler in JOB_SIGNAL_HANDLERS.items():
                signal.signal(signum, handler)
    _quiet_loggers()  # Ray configures its own loggers on import
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress_bars
    context.print_on_execution_start = False


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def stop_ray_started_since(was_running: bool) -> None:
    """Stop the Ray a step started for a stretch of work that is over (a Ray that was already up, the
    caller's or an earlier step's, is left alone). Its connection keeps buffers and object-store
    pages in this process for as long as it is up."""
    if not was_running and ray_running():
        sys.modules["ray"].shutdown()


def private_ray_auth() -> None:
    """Token authentication for a Ray this job starts: a fresh random token in this process's
    environment (inherited by the Ray processes it starts, written nowhere), unless the user
    set token mode themselves. Ray reads the mode when it is imported, so this only takes
    effect before the first ``import ray``."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return
    if "ray" in sys.modules:
        log.debug("ray was imported before listcon started it: its authentication mode is left as it is")
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def gpus_in_cluster() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))
