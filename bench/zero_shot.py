"""Zero-shot: does the listwise head help on a collection it never trained on?

For each of cranfield, cisi, medline, cacm and adi: train the demo's head with that
collection left out of the training data (scifact train + the other four), rerank its
1,000 hybrid candidates (and the top 20 ... 500, for the depth curve), and report BM25,
dense, both hybrid fusions and listcon, with a paired t-test of listcon against the better
fusion. The held-out corpus is outside the head's domain, so listcon ranks it by the head's
anchor fusion; the column "whole head" reranks it with the learned part applied anyway
(``outside_domain="head"``), to show what the guard keeps out. Reuses the workdirs `make demo`
prepared (work/<name>); writes bench/results/zero_shot.json and a table.

    python -m bench.zero_shot [--config jobs/demo.toml] [--collections cranfield cisi ...] [--epochs N]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import load_config
from listcon.jobs.evaluate_job import evaluate
from listcon.jobs.rerank_job import rerank
from listcon.jobs.mine_job import mine
from listcon.jobs.run_job import prepare
from listcon.jobs.runtime import setup_logging
from listcon.jobs.train_job import train
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query, without_self
from listcon.pipeline.store.ranked_lists import read_provenance, read_trec

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (20, 50, 100, 200, 500)
RUNS = ("lexical", "dense", "hybrid-rrf", "hybrid-convex", "listcon", "whole-head")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi", "medline", "cacm", "adi"])
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "zero_shot")
    parser.add_argument("--epochs", type=int, help="train for at most this many epochs (default: the config's)")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    config = load_config(args.config)
    rows, curves = [], {}
    for held_out in args.collections:
        target = next(e for e in config.train.extra if e.name == held_out)
        others = tuple(e for e in config.train.extra if e.name != held_out)
        head = args.out / f"head-without-{held_out}"
        settings = replace(config.train.settings, epochs=args.epochs or config.train.settings.epochs)
        trained = replace(config, train=replace(config.train, extra=others, out=str(head), settings=settings))
        for extra in others:  # the demo mined these; a no-op unless it did not run
            mine(trained.for_collection(extra), extra.split)
        result = train(trained)
        unseen = replace(trained.for_collection(target), rerank=replace(config.rerank, model_dir=str(head), depths=()))
        prepare(unseen, target.split, config.retrieve.k, progress=False)
        rerank(unseen, progress=False)
        for depth in DEPTHS:
            rerank(unseen, depth=depth, run_name=f"listcon-top{depth}", progress=False)
        whole = replace(unseen, rerank=replace(unseen.rerank, settings=replace(unseen.rerank.settings,
                                                                               outside_domain="head")))
        rerank(whole, run_name="whole-head", progress=False)
        evaluate(unseen)
        qrels = read_qrels(target.data, target.split)
        work = unseen.work
        values = {run: per_query(qrels, without_self(read_trec(work.run(target.split, run))), ["nDCG@10"])["nDCG@10"]
                  for run in RUNS + tuple(f"listcon-top{d}" for d in DEPTHS)}
        means = {run: sum(v.values()) / len(v) for run, v in values.items()}
        best_fusion = max(("hybrid-rrf", "hybrid-convex"), key=means.get)
        rows.append({"collection": held_out, "queries": len(values["listcon"]),
                     **{run: means[run] for run in RUNS}, "best_fusion": best_fusion,
                     "delta_vs_best_fusion": means["listcon"] - means[best_fusion],
                     "p_vs_best_fusion": paired_test(values["listcon"], values[best_fusion]),
                     "delta_whole_head_vs_best_fusion": means["whole-head"] - means[best_fusion],
                     "learned_part_applied": read_provenance(work.rankings(target.split))["learned_part"],
                     "validation_best": result.best_metric, "best_epoch": result.best_epoch,
                     "epochs": settings.epochs})
        curves[held_out] = {**{d: means[f"listcon-top{d}"] for d in DEPTHS}, config.retrieve.k: means["listcon"]}
        print(f"{held_out}: listcon {means['listcon']:.4f} vs {best_fusion} {means[best_fusion]:.4f}", flush=True)
    print_table(rows, ["collection", "queries", *RUNS, "delta_vs_best_fusion", "p_vs_best_fusion",
                       "delta_whole_head_vs_best_fusion"])
    mean_delta = sum(r["delta_vs_best_fusion"] for r in rows) / len(rows)
    worst = min(r["delta_vs_best_fusion"] for r in rows)
    print(f"mean delta vs the better fusion: {mean_delta:+.4f}; worst: {worst:+.4f}")
    print("nDCG@10 by depth:", {c: {d: round(v, 4) for d, v in curve.items()} for c, curve in curves.items()})
    print(f"wrote {write_results('zero_shot', {'rows': rows, 'mean_delta_vs_best_fusion': mean_delta, 'worst_delta': worst, 'depth_curves': curves, 'measure': 'nDCG@10', 'drop_self': True})}")


if __name__ == "__main__":
    run_bench(main)
