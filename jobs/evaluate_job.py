"""`listcon evaluate`: every run of a split against its qrels; metrics.json + report.md."""

from __future__ import annotations

import json
import logging

from listcon.jobs.runtime import log_config
from listcon.pipeline.atomic import write_text
from listcon.pipeline.evaluate import DEFAULT_MEASURES, aggregate, per_query
from listcon.pipeline.ranked_lists import read_trec
from listcon.pipeline.readers import read_qrels
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)


def run_evaluate(data: str, workdir: Workdir, split: str, measures: tuple[str, ...] = DEFAULT_MEASURES) -> dict:
    """Returns ``{run name: {measure: mean}}`` and writes the report under W/reports/<split>/."""
    log_config("evaluate", {"data": data, "workdir": str(workdir.root), "split": split, "measures": measures})
    runs = workdir.runs(split)
    if not runs:
        raise FileNotFoundError(f"no runs for split {split!r} under {workdir.root / 'runs'}; run `listcon retrieve` first")
    qrels = read_qrels(data, split)
    results = {}
    for path in runs:
        name = path.name[len(split) + 1 : -len(".trec")]
        results[name] = aggregate(per_query(qrels, read_trec(path), measures))
    out = workdir.reports(split)
    write_text(out / "metrics.json", json.dumps({"split": split, "data": data, "runs": results}, indent=2) + "\n")
    header = "| run | " + " | ".join(measures) + " |\n|---|" + "---|" * len(measures) + "\n"
    rows = "".join(f"| {name} | " + " | ".join(f"{m[x]:.4f}" for x in measures) + " |\n" for name, m in results.items())
    write_text(out / "report.md", f"# {split}\n\n{header}{rows}")
    log.info("evaluate %s:\n%s%s", split, header, rows)
    return results
