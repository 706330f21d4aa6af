"""A normal run prints listcon's own log lines, not third-party notices: no lance fork-safety warning, no Ray
Data progress or execution notices, none of the Ray core worker's C++ log lines (those stay in Ray's driver
log, and appear with -v)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from conftest import data_dir
from listcon.jobs.lock import LOCK_FILE
from test_faults import ENV

OURS = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) listcon[.\w]*: ")


def test_embed_and_retrieve_print_no_third_party_notices(adi_embedded, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(adi_embedded, work, ignore=shutil.ignore_patterns(LOCK_FILE, "passages.lance", "candidates"))
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_DATA_LOG")}
    for argv in (["embed", str(data_dir("adi")), "--workdir", str(work)], ["index", "--workdir", str(work)],
                 ["retrieve", str(data_dir("adi")), "--workdir", str(work), "--split", "test", "--k", "50"]):
        done = subprocess.run([sys.executable, "-m", "listcon.jobs.cli", *argv, "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        foreign = [line for line in lines if not OURS.match(line)]
        assert not foreign, f"{argv[0]} printed lines listcon did not write: {foreign[:5]}"
        assert argv[0] == "index" or any("encoded 82 passages" in l or "35 queries x top-50" in l for l in lines)


FILTERED = r'''
import os, sys
from listcon.jobs.runtime import native_log_lines_held_back
with native_log_lines_held_back():
    os.write(2, b"[2026-12-06 22:30:07,146 E 28516 28516] core_worker.cc:2465: Actor with class name: 'X' has constructor arguments\n")
    sys.stderr.write("12:00:00 INFO listcon: kept\n"); sys.stderr.flush()
    os.write(2, b"embed:  50%|#####     | 1/2\r")
    os.write(2, b"[2026-12-06 22:30:08,000 W 1 2] raylet_client.cc:9: also")
    os.write(2, b" Ray's\n[not Ray's] a bracketed line\n")
    os.write(2, b"no line end at the close")
sys.stderr.write("after\n")
'''


def test_ray_native_lines_are_held_back_and_every_other_byte_passes_in_order():
    done = subprocess.run([sys.executable, "-c", FILTERED], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (b"12:00:00 INFO listcon: kept\nembed:  50%|#####     | 1/2\r[not Ray's] a bracketed line\n"
                           b"no line end at the close" b"after\n")


STALLED = r'''
import sys, threading, time, types
from listcon.jobs import runtime
look, armed = runtime.select.select, threading.Event()
stalled = []

def stalling(*args):  # the pump descheduled once between an empty look at the pipe and what it does next
    found = look(*args)
    if armed.is_set() and not found[0] and not stalled and threading.current_thread().name == "listcon-stderr":
        stalled.append(True)
        time.sleep(0.5)
    return found

runtime.select = types.SimpleNamespace(select=stalling)
with runtime.native_log_lines_held_back():
    armed.set()
    time.sleep(0.2)  # the pump is stalled now; the job writes its last line and leaves the block meanwhile
    sys.stderr.write("12:00:00 ERROR listcon: the last line\n"); sys.stderr.flush()
assert stalled
'''


def test_the_last_line_before_the_block_ends_passes_however_the_pump_thread_is_scheduled():
    """The line a failing job logs last (its one-line error) reaches stderr even when the thread passing lines on
    was descheduled right when the block ended (once a load-dependent flake: the error line went missing)."""
    done = subprocess.run([sys.executable, "-c", STALLED], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"12:00:00 ERROR listcon: the last line\n"
