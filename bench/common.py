"""Helpers shared by the bench scripts: timing, peak memory, result files, the entry point."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from listcon.jobs.runtime import native_log_lines_held_back

RESULTS = Path(__file__).resolve().parent / "results"


def run_bench(main: Callable[[], None]) -> None:
    """A bench's ``main`` with Ray's C++ log lines kept off stderr, as the ``listcon`` CLI keeps them (they stay in
    Ray's driver log): a bench that embeds or reranks through Ray Data otherwise prints its core worker's lines."""
    with native_log_lines_held_back():
        main()


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(size: int = 2048, dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Measured dense matmul rate in this process, the roofline the model's rate is compared to."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def run() -> None:
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    return 2 * size**3 / timed(run, repeats=5) / 1e9


def machine() -> dict:
    """Where the numbers were taken."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git": sha or None,
    }


def write_results(name: str, payload: dict) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned table on stdout."""
    cells = [[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
