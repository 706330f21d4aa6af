"""`listcon evaluate`: every run of a split against its qrels, side by side, with a paired
significance test against the first stage, as report.md + metrics.json + PNG plots."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.runtime import log_config
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import per_query, without_self
from listcon.pipeline.evaluation.report import write_report
from listcon.pipeline.store.ranked_lists import read_provenance, read_trec

log = logging.getLogger(__name__)

BASELINE = "first_stage"


@dataclass(frozen=True)
class EvaluateResult:
    """The report's directory and its summary ``{run: {measure: {mean, delta, p_vs_baseline}}}``."""

    report_dir: Path
    summary: dict


@locked("evaluate")
def evaluate(config: Config, split: str | None = None, baseline: str = BASELINE) -> EvaluateResult:
    """Score every TREC run of ``split`` under W/runs and write the report."""
    split, work, measures = split or config.split, config.work, config.evaluate.measures
    log_config("evaluate", {"data": config.data, "workdir": config.workdir, "split": split, "measures": measures,
                            "baseline": baseline})
    runs = work.runs(split)
    if not runs:
        raise FileNotFoundError(f"no runs for split {split!r} under {work.root / 'runs'}; run `listcon retrieve` first")
    qrels = read_qrels(config.need_data(), split)
    drop_self = config.evaluate.drop_self
    per_run = {path.name[len(split) + 1 : -len(".trec")]: per_query(qrels, without_self(read_trec(path)) if drop_self else read_trec(path),
                                                                    measures) for path in runs}
    candidates = read_provenance(work.candidates(split)) or {}
    full_depth = {config.rerank.run_name: candidates["k"]} if "k" in candidates else {}
    note = ("A passage whose id is its query's id is dropped from every run before scoring (BEIR's rule)."
            if drop_self else "Passages whose id equals the query's id are kept (drop_self = false).")
    summary = write_report(work.reports(split), f"{split}: retrieval and reranking", per_run, list(measures),
                           baseline if baseline in per_run else None, config.rerank.run_name, full_depth,
                           {"data": config.data, "split": split, "drop_self": drop_self}, [note])
    for run, metrics in summary.items():
        log.info("evaluate %s %-24s %s", split, run, "  ".join(f"{m}={v['mean']:.4f}" for m, v in metrics.items()))
    return EvaluateResult(work.reports(split), summary)
