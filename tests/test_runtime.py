"""Process setup a job shares: handing freed heap memory back, and leaving a caller's Ray alone."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from listcon.jobs.runtime import release_freed_memory


def _anon_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("RssAnon:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's heap")
def test_freed_heap_pages_leave_the_resident_set():
    # 150 MB in blocks below glibc's mmap threshold come from the heap; with the last one kept the
    # heap cannot shrink from the top, so the freed pages stay resident until they are handed back
    blocks = [np.ones(100_000 // 8) for _ in range(1500)]
    keep = blocks[-1]
    del blocks
    freed = _anon_mib()
    release_freed_memory()
    assert _anon_mib() < freed - 100
    assert keep.sum() == len(keep)


def test_a_step_leaves_a_ray_it_did_not_start_running(adi_embedded):
    """The fixture's retrieve encoded its queries on the session's Ray; it must not have stopped it."""
    import ray

    assert ray.is_initialized()
