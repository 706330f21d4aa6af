"""`listcon evaluate`: every run of a split against its qrels, side by side, with a paired
significance test against the first stage, as report.md + metrics.json + PNG plots."""

from __future__ import annotations

import logging

from listcon.jobs.runtime import log_config
from listcon.pipeline.evaluate import DEFAULT_MEASURES, per_query
from listcon.pipeline.ranked_lists import read_provenance, read_trec
from listcon.pipeline.readers import read_qrels
from listcon.pipeline.report import write_report
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)

BASELINE = "first_stage"
MAIN_RUN = "listcon"


def run_evaluate(data: str, workdir: Workdir, split: str, measures: tuple[str, ...] = DEFAULT_MEASURES,
                 baseline: str = BASELINE) -> dict:
    """Returns the summary ``{run: {measure: {mean, delta, p_vs_baseline}}}``."""
    log_config("evaluate", {"data": data, "workdir": str(workdir.root), "split": split, "measures": measures,
                            "baseline": baseline})
    runs = workdir.runs(split)
    if not runs:
        raise FileNotFoundError(f"no runs for split {split!r} under {workdir.root / 'runs'}; run `listcon retrieve` first")
    qrels = read_qrels(data, split)
    per_run = {path.name[len(split) + 1 : -len(".trec")]: per_query(qrels, read_trec(path), measures) for path in runs}
    candidates = read_provenance(workdir.candidates(split)) or {}
    full_depth = {MAIN_RUN: candidates["k"]} if "k" in candidates else {}
    summary = write_report(workdir.reports(split), f"{split}: retrieval and reranking", per_run, list(measures),
                           baseline if baseline in per_run else None, MAIN_RUN, full_depth, {"data": data, "split": split})
    for run, metrics in summary.items():
        log.info("evaluate %s %-24s %s", split, run, "  ".join(f"{m}={v['mean']:.4f}" for m, v in metrics.items()))
    return summary
