"""The shipped fusion choice on queries no decision has seen: every other judged split of the bench's collections.

``bench.transfer`` scores each collection on one split (test; liveqa_med: train), and the fusion rule, its grid
and the bound that keeps both sides were settled on those numbers. Six of the collections have other judged
splits (scifact train; nfcorpus, wikiqa, trecqa and medquad dev, and wikiqa's and trecqa's train; splits of
over 2,000 queries are left out for time), which no choice of listcon's fusion rule has read. The choice itself is per corpus (made on its pseudo-queries, read from
the ``adapt.json`` that bench left), so here it stays as it is and only the queries are new: each split is
retrieved in the collection's bench workdir (hybrid top-1,000) and ranked by the fixed fusions, the fallback
anchor, and the fusion each rule chose (the shipped one-se, significant, and one-se with the edges w = 0, 1).

What it checks, fixed before any of these splits was ranked: the shipped rule's mean gain over the better fixed
fusion stays positive over these splits, and no split is below that fusion by more than 0.005 (the issue's bound).
Whether one-se with the edges loses on trecqa's other splits as on its test split says whether that loss, which
the bound was set after, belongs to the corpus or to its test queries.

    python -m bench.transfer_splits [--collections trecqa ...]

Needs ``python -m bench.transfer`` first (the workdirs and their adaptation records). Writes
bench/results/transfer_splits.json and prints a table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pyarrow.compute as pc

from bench.common import print_table, run_bench, write_results
from bench.transfer import (CHOICES, COLLECTIONS, DATA, FUSIONS, SHIPPED, collection_config, collection_lists,
                            collection_parser, fused_by, ranked)
from listcon.jobs.config import load_config
from listcon.jobs.run_job import prepare
from listcon.jobs.runtime import setup_logging
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query

BAR = -0.005
MAX_QUERIES = 2000  # nfcorpus's and medquad's train splits (2,590 and 11,433 queries) are left out: 2 cores
FIXED = {"rrf": "rrf", "convex": "fused", "anchor": "fallback"}


def other_splits(name: str) -> list[str]:
    """The judged splits of collection ``name`` other than the one ``bench.transfer`` evaluates, of at most
    ``MAX_QUERIES`` judged queries."""
    return sorted(p.stem for p in (DATA / name / "qrels").glob("*.tsv") if p.stem != COLLECTIONS[name]
                  and pc.count_distinct(read_qrels(DATA / name, p.stem)["query_id"]).as_py() <= MAX_QUERIES)


def main() -> None:
    parser = collection_parser(__doc__)
    parser.add_argument("--k", type=int, default=1000, help="first-stage depth (as bench.transfer's)")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    base = load_config(args.config)
    rows = []
    for name in args.collections:
        record = json.loads((args.out / name / "adapt.json").read_text())["rules"]
        for split in other_splits(name):
            config = replace(collection_config(base, name, args.out), split=split)
            prepare(config, split, args.k, progress=False)
            lists = collection_lists(config, args.out / name / f"hybrid-{split}.npz", "hybrid")
            runs = {run: ranked(lists, by) for run, by in FIXED.items()}
            for choice in CHOICES:
                runs[f"adapted-{choice}"] = fused_by(lists, record[choice]["dense_weight"], runs["anchor"])
            qrels = read_qrels(config.data, split)
            values = {run: per_query(qrels, r, ["nDCG@10"])["nDCG@10"] for run, r in runs.items()}
            means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
            best = max(FUSIONS["hybrid"], key=means.get)
            row = {"name": name, "split": split, "queries": len(values["anchor"]), **means, "best_fusion": best}
            for run in ("anchor", *(f"adapted-{c}" for c in CHOICES)):
                row[f"{run}_delta"] = means[run] - means[best]
                row[f"{run}_p"] = paired_test(values[run], values[best])
            row.update({f"adapted-{c}_weight": record[c]["dense_weight"] for c in CHOICES})
            rows.append(row)
            print(f"{name} {split}: listcon {means[f'adapted-{SHIPPED}']:.4f} vs {best} {means[best]:.4f} "
                  f"({row[f'adapted-{SHIPPED}_delta']:+.4f}, p={row[f'adapted-{SHIPPED}_p']:.2g})", flush=True)
    if not rows:
        print("no other judged split in these collections")
        return
    summary = {run: {"mean_delta": float(np.mean([r[f"{run}_delta"] for r in rows])),
                     "worst_delta": float(min(r[f"{run}_delta"] for r in rows))}
               for run in ("anchor", *(f"adapted-{c}" for c in CHOICES))}
    listcon = summary[f"adapted-{SHIPPED}"]
    summary["holds"] = listcon["mean_delta"] > 0 and listcon["worst_delta"] >= BAR
    summary["splits"] = len(rows)
    print_table(rows, ["name", "split", "queries", "rrf", "convex", "anchor", *(f"adapted-{c}_weight" for c in CHOICES),
                       *(f"adapted-{c}_delta" for c in CHOICES), f"adapted-{SHIPPED}_p"])
    print("against the better fusion:", summary)
    print(f"wrote {write_results('transfer_splits', {'measure': 'nDCG@10', 'candidates': 'hybrid top-1,000', 'shipped': SHIPPED, 'bar': BAR, 'collections': rows, 'summary': summary, 'choices': 'each corpus its bench.transfer adaptation record (pseudo-queries; no query or judgment)'})}")


if __name__ == "__main__":
    run_bench(main)
