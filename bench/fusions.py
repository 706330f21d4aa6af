"""Fixed fusions of the same BM25 and MiniLM runs, on every collection the demo prepared.

Which untrained fusion is the one to anchor a head to? The retrieve step writes the RRF and
convex runs; this script adds fusions computed from the candidates' stored signals (each
query's 1,000 hybrid candidates, every one carrying its exact dense and BM25 score and both
ranks): CombSUM of z-scores (each side standardised over the query's candidates) and
convex + RRF. nDCG@10 with BEIR's self-match rule, against the better of RRF and convex per
collection (paired t-test). Reads the workdirs `make demo` left (work/<name>); writes
bench/results/fusions.json and a table.

    python -m bench.fusions [--config jobs/demo.toml] [--collections scifact cranfield ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import load_config
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query, without_self
from listcon.pipeline.retrieval.signals import z_scores
from listcon.pipeline.store.ranked_lists import read_ranked, read_trec, rows_by_query

ROOT = Path(__file__).resolve().parents[1]
STORED = ("hybrid-rrf", "hybrid-convex")


def computed_runs(candidates, k: int, rrf_k: int = 60) -> dict[str, dict[str, dict[str, float]]]:
    """The fusions that are not stored, over each query's candidates: ``{name: {qid: {pid: score}}}``."""
    runs: dict[str, dict] = {"zsum": {}, "convex+rrf": {}}
    for qid, rows in rows_by_query(candidates).items():
        ids = rows["passage_id"].to_pylist()
        dense, bm25 = (rows[c].to_numpy().astype(np.float64) for c in ("dense_score", "lexical_score"))
        ranks = [rows[c].to_numpy() for c in ("dense_rank", "lexical_rank")]
        rrf = sum(np.where(r <= k, 1.0 / (rrf_k + r), 0.0) for r in ranks)
        convex = rows["score"].to_numpy().astype(np.float64)
        # convex is in [0, 1]; RRF of a passage both sides rank first is 2 / (rrf_k + 1): scaled to 1
        fused = {"zsum": z_scores(dense) + z_scores(bm25), "convex+rrf": convex + 0.5 * rrf * (rrf_k + 1) / 2}
        for name, scores in fused.items():
            runs[name][qid] = dict(zip(ids, scores.tolist()))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--collections", nargs="+", help="names to include (default: the main one and every extra)")
    args = parser.parse_args()
    config = load_config(args.config)
    collections = [("scifact", config)] + [(e.name, config.for_collection(e)) for e in config.train.extra]
    collections = [(n, c) for n, c in collections if not args.collections or n in args.collections]
    rows = []
    for name, collection in collections:
        split, work = collection.split, collection.work
        candidates = read_ranked(work.candidates(split))
        k = int(pc.max(candidates["rank"]).as_py())
        qrels = read_qrels(collection.data, split)
        runs = {run: read_trec(work.run(split, run)) for run in STORED} | computed_runs(candidates, k)
        values = {run: per_query(qrels, without_self(r), ["nDCG@10"])["nDCG@10"] for run, r in runs.items()}
        means = {run: sum(v.values()) / len(v) for run, v in values.items()}
        best = max(STORED, key=means.get)
        row = {"collection": name, "queries": len(values[best]), **means, "better_fusion": best}
        for run in ("zsum", "convex+rrf"):
            row[f"{run} vs better"] = means[run] - means[best]
            row[f"{run} p"] = paired_test(values[run], values[best])
        rows.append(row)
    columns = ["collection", "queries", *STORED, "zsum", "convex+rrf", "zsum vs better", "zsum p",
               "convex+rrf vs better", "convex+rrf p"]
    print_table(rows, columns)
    summary = {run: {"mean_delta": float(np.mean([r[f"{run} vs better"] for r in rows])),
                     "worst_delta": float(min(r[f"{run} vs better"] for r in rows))} for run in ("zsum", "convex+rrf")}
    print("against the better of RRF and convex:", summary)
    print(f"wrote {write_results('fusions', {'rows': rows, 'summary': summary, 'measure': 'nDCG@10', 'drop_self': True})}")


if __name__ == "__main__":
    run_bench(main)
