"""The head fine-tuned on the left-out collection's own pseudo-queries: does self-supervised adaptation make it transfer?

For every collection ``bench.transfer_head`` left out, the head it trained without that collection
(``work/transfer/heads/without-<name>``) is fine-tuned by ``listcon adapt --init`` on pseudo-queries cut from
the collection's passages (never its queries or judgments; the demo's ``[train]`` settings, at most ``--epochs``
epochs at ``--lr``, the epoch picked on held-out pseudo-queries with the head as given as epoch 0), then the
collection's judged queries are reranked with the learned part forced on. Reported per collection: nDCG@10 of
the head as trained and as adapted, each against the better fixed fusion (paired t-test p), the adapted head
against the head (p), and the fine-tuning's pseudo-query validation (before and at the picked epoch).

    python -m bench.transfer_adapted_head [--collections adi ...] [--epochs 3] [--lr 3e-4] [--pseudo-queries 500]

Needs ``python -m bench.transfer_head`` first (the heads and their runs). Writes
bench/results/transfer_adapted_head.json (keeping the rows an earlier run with the same settings wrote for other
collections from the heads still there) and prints a table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import print_table, run_bench, write_results
from bench.transfer import ROOT, collection_config, collection_lists, collection_parser, fused_by, shipped_weight
from bench.transfer_head import RUN as HEAD_RUN, scored
from listcon.jobs.adapt_head_job import adapt_head
from listcon.jobs.config import load_config
from listcon.jobs.rerank_job import rerank
from listcon.jobs.runtime import setup_logging
from listcon.model.head_config import CONFIG_FILE, checkpoint_fingerprint
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query

RUN = "head-adapted"
SUMMED = ("head_delta", "adapted_delta", "adapted_vs_head", "adapted_vs_listcon")  # each row's, summarised
RESULTS = ROOT / "bench" / "results" / "transfer_adapted_head.json"


def main() -> None:
    parser = collection_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="the epoch cap of each fine-tuning")
    parser.add_argument("--lr", type=float, default=3e-4, help="the fine-tuning's learning rate")
    parser.add_argument("--pseudo-queries", type=int, default=500)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    base = load_config(args.config)
    settings = {"epochs": args.epochs, "lr": args.lr, "pseudo_queries": args.pseudo_queries}
    rows = earlier(args.collections, settings, args.out / "heads")
    for name in args.collections:
        head = args.out / "heads" / f"without-{name}"
        checkpoint = head_checkpoint(head)  # adapt leaves its --init head as it is
        if checkpoint is None:
            print(f"{name}: no head trained without it at {head}; run `python -m bench.transfer_head --collections "
                  f"{name}` first", flush=True)
            continue
        target = collection_config(base, name, args.out)
        target = replace(target, adapt=replace(base.adapt, init=str(head), epochs=args.epochs, lr=args.lr,
                                               pseudo_queries=args.pseudo_queries))
        result = adapt_head(target, progress=False)
        forced = replace(target, rerank=replace(base.rerank, model_dir=result.out, run_name=RUN, depths=(),
                                                settings=replace(base.rerank.settings, outside_domain="head")))
        rerank(forced, progress=False)
        values, means, best = scored(target, args.out / name, [HEAD_RUN, RUN])
        listcon = shipped(target, args.out, name)
        listcon_mean = float(np.mean(list(listcon.values())))
        history = {h["epoch"]: h for h in result.history}
        row = {"name": name, "head_checkpoint": checkpoint, "queries": len(values[RUN]),
               "best_fusion": best, "fusion": means[best],
               "head": means[HEAD_RUN], "head_delta": means[HEAD_RUN] - means[best],
               "adapted": means[RUN], "adapted_delta": means[RUN] - means[best],
               "adapted_p": paired_test(values[RUN], values[best]),
               "adapted_vs_head": means[RUN] - means[HEAD_RUN], "adapted_vs_head_p": paired_test(values[RUN], values[HEAD_RUN]),
               "listcon": listcon_mean, "adapted_vs_listcon": means[RUN] - listcon_mean,
               "adapted_vs_listcon_p": paired_test(values[RUN], listcon),
               "best_epoch": result.best_epoch, "pseudo_before": history[0]["val_ndcg@10"],
               "pseudo_best": result.best_metric,
               "train_seconds": round(sum(h.get("seconds") or 0 for h in result.history), 1)}
        rows = [r for r in rows if r["name"] != name] + [row]
        print(f"{name}: adapted head {row['adapted']:.4f}, head {row['head']:.4f}, {best} {row['fusion']:.4f} "
              f"(pseudo-queries {row['pseudo_before']:.3f} -> {row['pseudo_best']:.3f} at epoch {row['best_epoch']})",
              flush=True)
        written = report(rows, settings)  # after every collection: a stopped bench keeps its rows
    print_table(rows, ["name", "queries", "fusion", "head", "head_delta", "adapted", "adapted_delta", "adapted_p",
                       "adapted_vs_head", "adapted_vs_head_p", "listcon", "adapted_vs_listcon", "adapted_vs_listcon_p",
                       "best_epoch", "pseudo_before", "pseudo_best",
                       "train_seconds"])
    print(f"wrote {written}")


def shipped(target, out: Path, name: str) -> dict[str, float]:
    """Per-query nDCG@10 of listcon under the shipped rule on left-out collection ``name``'s hybrid candidates: ranked
    by the fusion its pseudo-queries chose (``bench.transfer``'s adaptation record; run that bench first)."""
    run = fused_by(collection_lists(target, out / name / "hybrid.npz", "hybrid"), shipped_weight(out, name))
    return per_query(read_qrels(target.data, target.split), run, ["nDCG@10"])["nDCG@10"]


def earlier(names: list[str], settings: dict, heads: Path) -> list[dict]:
    """The rows an earlier run with the same settings wrote for collections not run again now, each kept only while
    the head it adapted is still the one ``bench.transfer_head`` left at ``heads`` (a retrained head drops its row)
    and it has every column this bench summarises (a row from before a column was added is measured again)."""
    if not RESULTS.is_file():
        return []
    saved = json.loads(RESULTS.read_text())
    if saved["settings"] != settings:
        return []
    return [r for r in saved["collections"] if r["name"] not in names
            and r.get("head_checkpoint") is not None
            and r["head_checkpoint"] == head_checkpoint(heads / f"without-{r['name']}")
            and all(key in r for key in SUMMED)]


def head_checkpoint(head: Path) -> str | None:
    """The fingerprint of the head saved at ``head``, None where there is none."""
    return checkpoint_fingerprint(head) if (head / CONFIG_FILE).is_file() else None


def report(rows: list[dict], settings: dict) -> Path:
    """bench/results/transfer_adapted_head.json over the collections so far."""
    summary = {key: {"mean": float(np.mean([r[key] for r in rows])), "worst": float(min(r[key] for r in rows))}
               for key in SUMMED}
    summary["collections"] = len(rows)
    print("against the better fusion (and adapted against the head and the shipped rule):", summary, flush=True)
    return write_results("transfer_adapted_head", {
        "measure": "nDCG@10", "candidates": "hybrid top-1,000", "collections": rows, "summary": summary,
        "settings": settings, "train_settings": "the demo's [train] (list size 20, mining depth 1,000, val_depth 1,000)",
        "heads": "bench.transfer_head's, each trained without the collection it is adapted to",
        "adaptation_data": "pseudo-queries cut from the left-out collection's passages (no query, no judgment)"})


if __name__ == "__main__":
    run_bench(main)
