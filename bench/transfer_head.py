"""The listwise head itself, leave-one-collection-out: does what it learns on ten collections help on the eleventh?

For every collection of ``bench.transfer``: a head with the demo's settings is trained on the other ten
(their evaluation splits' judged queries, at most ``--queries-per-source`` of each, drawn by seed, so that
medquad's 1,465 queries do not decide it; validation on each one's 10% held out, every collection counting
alike), for at most ``--epochs`` epochs. The left-out collection's hybrid top-1,000 is then reranked with the
head's learned part forced on (``outside_domain = "head"``: the shipped rule would not apply it there), at the
full depth and at the top 20 and 100 for the depth curve. Reported per collection: nDCG@10 of the head, of the
better fixed fusion (paired t-test p) and of listcon under the shipped rule (from bench/results/transfer.json,
the same candidates and queries), plus the head's validation record.

    python -m bench.transfer_head [--collections scifact ...] [--epochs 4] [--queries-per-source 200]

Needs ``python -m bench.transfer --prepare-only`` first (the candidates). Mining is a no-op once done. Writes
bench/results/transfer_head.json (keeping the rows an earlier run with the same epoch cap, sampling and head settings
wrote for other collections) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import print_table, run_bench, write_results
from bench.transfer import COLLECTIONS, FUSIONS, ROOT, collection_config, collection_lists, collection_parser, ranked
from listcon.jobs.config import ExtraSource, load_config
from listcon.jobs.mine_job import mine
from listcon.jobs.rerank_job import rerank
from listcon.jobs.runtime import setup_logging
from listcon.jobs.train_job import train
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.store.ranked_lists import read_trec
from listcon.schemas import to_dict

DEPTHS = (20, 100)
RUN = "head-loco"
FIXED = {"rrf": "rrf", "convex": "fused"}  # the hybrid lists' fixed rankings, by the bench's names


def main() -> None:
    parser = collection_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=4, help="the epoch cap of each training")
    parser.add_argument("--queries-per-source", type=int, default=200, help="training queries of each other collection")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    base = load_config(args.config)
    configs = {name: collection_config(base, name, args.out) for name in COLLECTIONS}
    for config in configs.values():  # every collection's training lists, once (a no-op when mined)
        mine(config, config.split)
    settings = replace(base.train.settings, epochs=args.epochs, patience=args.epochs,
                       queries_per_source=args.queries_per_source, val_weighting="collections")
    head_settings = to_dict(base.train.settings.head)  # as the JSON holds them
    rows, curves = earlier(args, head_settings)
    for held_out in args.collections:
        others = [name for name in COLLECTIONS if name != held_out]
        head = args.out / "heads" / f"without-{held_out}"
        main_config = configs[others[0]]
        extras = tuple(ExtraSource(name=n, data=configs[n].data, workdir=configs[n].workdir, split=configs[n].split)
                       for n in others[1:])
        trained = replace(main_config, train=replace(base.train, split=main_config.split, extra=extras, out=str(head),
                                                     settings=settings))
        result = train(trained)  # a no-op where the head is up to date
        target = configs[held_out]
        forced = replace(target, rerank=replace(base.rerank, model_dir=str(head), run_name=RUN, depths=(),
                                                settings=replace(base.rerank.settings, outside_domain="head")))
        for depth in (None, *DEPTHS):
            rerank(forced, depth=depth, run_name=RUN if depth is None else f"{RUN}-top{depth}", progress=False)
        values, means, best = scored(target, args.out / held_out, [RUN, *(f"{RUN}-top{d}" for d in DEPTHS)])
        row = {"name": held_out, "queries": len(values[RUN]), "rrf": means["rrf"], "convex": means["convex"],
               "best_fusion": best, "head": means[RUN], "head_delta": means[RUN] - means[best],
               "head_p": paired_test(values[RUN], values[best]), "best_epoch": result.best_epoch,
               "validation": result.best_metric,
               "train_seconds": round(sum(h.get("seconds") or 0 for h in result.history), 1)}
        rows.append(row)
        curves[held_out] = {**{d: means[f"{RUN}-top{d}"] for d in DEPTHS}, 1000: means[RUN]}
        print(f"{held_out}: head {means[RUN]:.4f} vs {best} {means[best]:.4f} (best epoch {result.best_epoch}, "
              f"epochs {row['train_seconds']:.0f} s)", flush=True)
        written = report(rows, curves, args, head_settings)  # after every left-out collection: a stopped bench keeps its rows
    print_table(rows, ["name", "queries", "rrf", "convex", "head", "head_delta", "head_p", "listcon", "listcon_delta",
                       "best_epoch", "train_seconds"])
    print(f"wrote {written}")


def scored(target, out: Path, runs: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float], str]:
    """(per-query nDCG@10 of the fixed fusions and of the workdir's ``runs``, their means, the better fusion) on a
    left-out collection's judged queries."""
    qrels = read_qrels(target.data, target.split)
    lists = collection_lists(target, out / "hybrid.npz", "hybrid")
    values = {run: per_query(qrels, ranked(lists, by), ["nDCG@10"])["nDCG@10"] for run, by in FIXED.items()}
    for run in runs:
        values[run] = per_query(qrels, read_trec(target.work.run(target.split, run)), ["nDCG@10"])["nDCG@10"]
    means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
    return values, means, max(FUSIONS["hybrid"], key=means.get)


def earlier(args: argparse.Namespace, head_settings: dict) -> tuple[list[dict], dict]:
    """The rows of the collections an earlier run left out with the same cap, sampling and head settings, not left
    out again now: a run over the collections still missing adds them (a changed head starts the table afresh)."""
    path = ROOT / "bench" / "results" / "transfer_head.json"
    if not path.is_file():
        return [], {}
    saved = json.loads(path.read_text())
    if ((saved["epochs"], saved["queries_per_source"], saved["train_settings"]["head"])
            != (args.epochs, args.queries_per_source, head_settings)):
        return [], {}
    rows = [r for r in saved["collections"] if r["name"] not in args.collections]
    return rows, {r["name"]: saved["depth_curves"][r["name"]] for r in rows}


def report(rows: list[dict], curves: dict, args: argparse.Namespace, head_settings: dict) -> Path:
    """bench/results/transfer_head.json over the collections left out so far, with listcon under the shipped rule
    on the same candidates and queries (bench.transfer's rows)."""
    shipped = {r["name"]: r for r in json.loads((ROOT / "bench" / "results" / "transfer.json").read_text())["hybrid"]["collections"]}
    for row in rows:
        row["listcon"], row["listcon_delta"] = shipped[row["name"]]["listcon"], shipped[row["name"]]["delta_vs_best_fusion"]
    summary = {"mean_delta": float(np.mean([r["head_delta"] for r in rows])),
               "worst_delta": float(min(r["head_delta"] for r in rows)), "collections": len(rows)}
    print("head, learned part forced on, against the better fusion:", summary, flush=True)
    return write_results("transfer_head", {
        "measure": "nDCG@10", "candidates": "hybrid top-1,000", "collections": rows, "summary": summary,
        "depth_curves": curves, "epochs": args.epochs, "queries_per_source": args.queries_per_source,
        "train_settings": {"val_weighting": "collections", "head": head_settings},
        "training_data": "the other ten collections' evaluation splits (never the left-out one's queries or passages)"})


if __name__ == "__main__":
    run_bench(main)
