"""Which first-stage signals matter, and where? scifact test, one report.

Each row trains the demo's head with one change (same data, seed, epochs) and reranks the
top-``--depth`` of every test query's hybrid candidates (the rest follow in first-stage
order): the paper-faithful head (no signals, no prior) on hybrid candidates; each signal left
out in turn; and the head without the cap. (Until 2026-12 the demo head also took the signals
as Transformer input, and a row measured it with the prior only; that row won and is now the
demo head: bench/results/signal_ablations keeps the measurement.) Reuses `make demo`'s workdirs; writes bench/results/signal_ablations/
(report.md, metrics.json) and prints the table. ``--epochs`` caps every row's training alike
(ten trainings at the demo's 20 epochs take ~3 hours on 2 cores).

    python -m bench.signal_ablations [--config jobs/demo.toml] [--depth 100] [--epochs N]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from bench.common import RESULTS, print_table, run_bench
from listcon.jobs.config import load_config
from listcon.jobs.rerank_job import rerank
from listcon.jobs.runtime import setup_logging
from listcon.jobs.train_job import train
from listcon.model import ListConRankerConfig
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import per_query, without_self
from listcon.pipeline.evaluation.report import write_report
from listcon.pipeline.store.ranked_lists import read_trec

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ["nDCG@10", "AP@1000", "RR@10"]


def variants(head: ListConRankerConfig) -> dict[str, ListConRankerConfig]:
    rows = {"demo head (all signals in the prior, capped)": head,
            "paper-faithful head (no signals, no prior)": ListConRankerConfig(),
            "no cap on the learned part": replace(head, head_cap=None)}
    for name in head.signals:  # each leaves in turn (and the anchor, if it weighs it)
        anchor = {k: v for k, v in head.anchor.items() if k != name}
        rest = tuple(s for s in head.signals if s != name)
        if not rest or (head.anchor and not anchor):
            continue  # the anchor's only signal: without it there is nothing to start from
        rows[f"without {name}"] = replace(head, signals=rest, anchor=anchor)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "signal_ablations")
    parser.add_argument("--epochs", type=int, help="train each row for at most this many epochs (default: the config's)")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    config = load_config(args.config)
    qrels = read_qrels(config.data, config.split)
    work = config.work
    per_run = {run: per_query(qrels, without_self(read_trec(work.run(config.split, run))), MEASURES)
               for run in ("hybrid-rrf", "hybrid-convex")}
    epochs = args.epochs or config.train.settings.epochs
    for name, head in variants(config.train.settings.head).items():
        slug = "ablation-" + "".join(c if c.isalnum() else "-" for c in name.split(" (")[0]).strip("-")
        out = args.out / slug
        trained = replace(config, train=replace(config.train, out=str(out),
                                                settings=replace(config.train.settings, head=head, epochs=epochs)),
                          rerank=replace(config.rerank, model_dir=str(out), run_name=slug, depths=()))
        result = train(trained)
        rerank(trained, depth=args.depth, progress=False)
        per_run[name] = per_query(qrels, without_self(read_trec(work.run(config.split, slug))), MEASURES)
        logging.getLogger("bench").warning("done: %s (validation %.4f)", name, result.best_metric)
    title = f"Signal ablations on scifact test (top-{args.depth} of the hybrid candidates reranked)"
    summary = write_report(RESULTS / "signal_ablations", title, per_run, MEASURES, "hybrid-convex", None, {},
                           {"depth": args.depth, "epochs": epochs, "config": str(args.config)})
    rows = [{"variant": run, **{m: v[m]["mean"] for m in MEASURES},
             "p_vs_convex": v["nDCG@10"].get("p_vs_baseline", float("nan"))} for run, v in summary.items()]
    print_table(rows, ["variant", *MEASURES, "p_vs_convex"])
    print(f"wrote {RESULTS / 'signal_ablations'}")


if __name__ == "__main__":
    run_bench(main)
