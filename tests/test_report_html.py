"""report.html as a person sees it: headless Chromium opens the file, its script fills the per-query
view (sortable, a query's detail shown), and a screenshot is taken. Slow: needs Debian's chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from listcon.pipeline.evaluation.html_report import QueryDetails
from listcon.pipeline.evaluation.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt install chromium)")]


def report(directory: Path) -> Path:
    """A report over 12 queries: listcon wins on some, loses on q3 most."""
    queries = {f"q{i}": f"query number {i} about topic {i}" for i in range(12)}
    base = {q: 0.5 for q in queries}
    ours = {q: 0.5 + (0.04 * i if i != 3 else -0.4) for i, q in enumerate(queries)}
    per_run = {"first_stage": {"nDCG@10": base}, "lexical": {"nDCG@10": {q: 0.3 for q in queries}},
               "listcon": {"nDCG@10": ours}}
    runs = {run: {q: {f"p{q}-{j}": 1.0 - j / 10 - (0.05 if run == "listcon" else 0) for j in range(8)} for q in queries}
            for run in per_run}
    judged = {q: {f"p{q}-1": 2, f"p{q}-4": 1} for q in queries}
    details = QueryDetails(queries, judged, runs, lambda ids: {p: f"the text of passage {p}" for p in ids})
    write_report(directory, "test: retrieval and reranking", per_run, ["nDCG@10"], "first_stage", "listcon", {},
                 notes=["A note."], details=details)
    return directory / "report.html"


def test_report_html_renders_its_per_query_view_in_chromium(tmp_path):
    page = report(tmp_path)
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert len(re.findall(r'<tr data-q="q\d+"', dom)) == 12  # the script drew every query's row
    assert re.search(r"<h3>q3: query number 3 about topic 3</h3>", dom)  # the largest loss, shown first
    assert dom.count('<span class="g">2</span>') >= 2  # its judged passage, marked, in the judged list and a top 5
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=3000", "--window-size=1280,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
