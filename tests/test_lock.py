"""One writer per workdir: a second job fails naming the first (or waits with --wait); a killed
holder leaves no stale lock; the lock is re-entrant within a process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from listcon.jobs.cli import main
from listcon.jobs.lock import WorkdirLocked, workdir_lock

HOLD = textwrap.dedent("""
    import sys, time
    from listcon.jobs.lock import workdir_lock
    with workdir_lock(sys.argv[1], "embed"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def holder(root, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_naming_the_first_then_a_killed_holder_leaves_no_lock(tmp_path, caplog):
    proc = holder(tmp_path, 60)
    try:
        assert main(["index", "--workdir", str(tmp_path)]) == 2
        assert f"workdir {tmp_path} is being written by listcon embed (pid {proc.pid}" in caplog.text
        assert "--wait" in caplog.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with workdir_lock(tmp_path, "index"):  # the kernel released the dead holder's lock: nothing stale
        pass


def test_wait_queues_behind_the_holder(tmp_path, caplog):
    proc = holder(tmp_path, 2)
    with caplog.at_level("INFO"):
        with workdir_lock(tmp_path, "rerank", wait=True):
            pass
    assert proc.wait(timeout=30) == 0  # the holder finished its work undisturbed
    assert "rerank: waiting for listcon embed" in caplog.text  # and we were queued behind it


def test_the_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path):
    with workdir_lock(tmp_path, "run"):
        with workdir_lock(tmp_path, "embed"):  # `listcon run` holds it across its steps
            pass
        other = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "0"], capture_output=True, text=True)
        assert other.returncode != 0 and "WorkdirLocked" in other.stderr
    with pytest.raises(WorkdirLocked, match="being written by listcon embed"):
        proc = holder(tmp_path, 60)
        try:
            with workdir_lock(tmp_path, "train"):
                pass
        finally:
            proc.kill()
            proc.wait()
