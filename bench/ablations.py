"""The paper's ablations at scifact scale, in one report.

Paper-faithful heads (no first-stage prior), stage 1, identical training settings; each
variant is trained on the mined train lists, then reranks the test split's top-``--depth``
candidates. Rows: ListAttention vs bidirectional vs PassageAttention; fused vs only-list vs
only-original features; Circle vs BCE vs triplet vs CoSENT; and iterative vs single-pass
inference over all ``--inference-depth`` candidates, for the paper-faithful head and for the
demo's head (first-stage prior; its iterative run is the demo's own). Metrics through
ir-measures with a paired t-test against the first stage.

    python -m bench.ablations [--workdir work/scifact] [--depth 100] [--inference-depth 1000] [--epochs 6]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench.common import RESULTS, print_table, run_bench
from listcon.jobs.runtime import setup_logging
from listcon.model import ListConRanker, ListConRankerConfig, PruneSchedule
from listcon.pipeline.data.readers import judged_queries, read_qrels
from listcon.pipeline.evaluation.evaluate import per_query
from listcon.pipeline.evaluation.report import write_report
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import candidate_lists, read_ranked, read_trec
from listcon.pipeline.training.data import Source, load_training
from listcon.pipeline.training.loop import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ["nDCG@10", "AP@1000", "RR@10"]
VARIANTS = {  # name -> (head overrides, loss)
    "list-attention, fused, circle": ({}, "circle"),
    "bidirectional attention": ({"attention": "bidirectional"}, "circle"),
    "passage attention": ({"attention": "passage"}, "circle"),
    "only listwise features": ({"features": "list"}, "circle"),
    "only original features": ({"features": "original"}, "circle"),
    "BCE loss": ({}, "bce"),
    "triplet loss": ({}, "triplet"),
    "CoSENT loss": ({}, "cosent"),
}


def run_of(table) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for q, p, s in zip(table["query_id"].to_pylist(), table["passage_id"].to_pylist(), table["score"].to_pylist()):
        run.setdefault(q, {})[p] = s
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "scifact")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--depth", type=int, default=100, help="candidates reranked per test query")
    parser.add_argument("--inference-depth", type=int, default=1000, help="candidates for iterative vs single pass")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    heads, n = args.workdir / "ablations", args.inference_depth
    source = Source("", args.data, str(args.workdir), "train").resolved()
    qrels = read_qrels(args.data, "test")
    query_ids = judged_queries(args.data, "test")[0]["id"].to_pylist()
    lists = candidate_lists(read_ranked(args.workdir / "candidates" / "test.lance"), query_ids)
    passages, queries = EmbeddingCache(str(args.workdir / "passages.lance")), EmbeddingCache(str(args.workdir / "queries.lance"))
    per_run = {"first stage (MiniLM cosine)": per_query(qrels, read_trec(args.workdir / "runs" / "test.first_stage.trec"), MEASURES)}
    for name, (head, loss) in VARIANTS.items():
        out = heads / name.replace(" ", "_").replace(",", "")
        settings = TrainSettings(loss=loss, lr=args.lr, epochs=args.epochs, patience=args.epochs,
                                 head=ListConRankerConfig(**head))
        data = load_training(source, [], settings)
        fit(data.lists, data.validation, data.features, settings, out)  # resumes; a no-op once finished
        model = ListConRanker.from_pretrained(out)
        per_run[name] = per_query(qrels, run_of(CachedReranker(model, passages, queries, RerankSettings(depth=args.depth)).rerank(lists)), MEASURES)
        if name.startswith("list-attention"):
            for label, theta in (("iterative", 20), ("single pass", n)):
                reranker = CachedReranker(model, passages, queries, RerankSettings(depth=n), PruneSchedule(theta=theta))
                per_run[f"paper head, {label}, top-{n}"] = per_query(qrels, run_of(reranker.rerank(lists)), MEASURES)
        logging.getLogger("bench").warning("done: %s", name)
    demo = ListConRanker.from_pretrained(args.workdir / "head")
    single = CachedReranker(demo, passages, queries, RerankSettings(depth=n), PruneSchedule(theta=n))
    per_run[f"demo head (prior), iterative, top-{n} (the demo's run)"] = per_query(qrels, read_trec(args.workdir / "runs" / "test.listcon.trec"), MEASURES)
    per_run[f"demo head (prior), single pass, top-{n}"] = per_query(qrels, run_of(single.rerank(lists)), MEASURES)
    title = f"ListConRanker ablations on scifact test (variants: top-{args.depth} reranked; inference rows: top-{n})"
    summary = write_report(RESULTS / "ablations", title,
                           per_run, MEASURES, "first stage (MiniLM cosine)", None, {},
                           {"depth": args.depth, "inference_depth": n, "epochs": args.epochs, "lr": args.lr,
                            "head": "paper-faithful, except the demo head rows"})
    rows = [{"variant": run, **{m: v[m]["mean"] for m in MEASURES}, "p_nDCG@10": v["nDCG@10"].get("p_vs_baseline", float("nan"))}
            for run, v in summary.items()]
    print_table(rows, ["variant", *MEASURES, "p_nDCG@10"])
    print(f"wrote {RESULTS / 'ablations'}")


if __name__ == "__main__":
    run_bench(main)
