"""Rerank throughput: queries/s reranking 1,000 cached candidates each, and the cost of not caching.

Over a workdir prepared by `make demo` (or embed/index/retrieve + a trained head): reranks
``--queries`` test queries x all their candidates on CPU with features taken from Lance,
then writes the results; reports the share of time in take vs model vs write. On a sample
of queries at ``--baseline-depth`` it also runs the released-style inference that re-encodes
the surviving passages every round, and the cached path on the same lists: the ratio.

    python -m bench.rerank_throughput [--workdir work/scifact] [--queries 300] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch

from bench.common import print_table, run_bench, write_results
from listcon.model import ListConRanker, TextEncoder
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import candidate_lists, read_ranked, write_ranked, write_trec
from listcon.pipeline.data.readers import judged_queries, read_corpus
from listcon.pipeline.rerank.reencode import ReencodeReranker
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "scifact")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--model-dir", type=Path, help="default: <workdir>/head")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--baseline-queries", type=int, default=3)
    parser.add_argument("--baseline-depth", type=int, default=100)
    args = parser.parse_args()
    work = Workdir(args.workdir)
    head = ListConRanker.from_pretrained(args.model_dir or work.root / "head")
    passages, queries = EmbeddingCache(work.passages), EmbeddingCache(work.queries)
    query_ids = judged_queries(args.data, args.split)[0]["id"].to_pylist()[: args.queries]
    lists = candidate_lists(read_ranked(work.candidates(args.split)), query_ids)
    candidates = sum(len(c) for _, c in lists)

    on = RerankSettings(device=args.device)
    cached = CachedReranker(head, passages, queries, on)
    started = time.perf_counter()
    table = cached.rerank(lists)
    rerank_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_ranked(table, f"{tmp}/rankings.lance", {"bench": True})
        write_trec(table, f"{tmp}/run.trec", "bench")
        write_s = time.perf_counter() - started
    total = rerank_s + write_s
    rows = [{"path": "cached features (listcon)", "queries": len(lists), "depth": candidates // len(lists),
             "seconds": total, "queries_per_s": len(lists) / total, "take_share": cached.seconds["take"] / total,
             "model_share": cached.seconds["model"] / total, "write_share": write_s / total}]

    corpus = read_corpus(args.data)
    texts = dict(zip(corpus.table["id"].to_pylist(), corpus.texts()))
    qtable = judged_queries(args.data, args.split)[0]
    encoder = TextEncoder(passages.metadata["model"], pooling=passages.metadata["pooling"],
                          normalize=passages.metadata["normalize"], max_length=passages.metadata["max_length"],
                          device=args.device)
    sample = lists[: args.baseline_queries]
    settings = RerankSettings(depth=args.baseline_depth, device=args.device)
    same_cached = CachedReranker(head, passages, queries, settings)
    started = time.perf_counter()
    cached_sample = same_cached.rerank(sample)
    cached_s = time.perf_counter() - started
    reencode = ReencodeReranker(head, encoder, texts, dict(zip(qtable["id"].to_pylist(), qtable["text"].to_pylist())), settings)
    started = time.perf_counter()
    reencoded = reencode.rerank(sample)
    reencode_s = time.perf_counter() - started
    same_top10 = sum(top10(cached_sample, q) == top10(reencoded, q) for q, _ in sample)
    for name, seconds in (("cached features, sample", cached_s), ("re-encode every round, sample", reencode_s)):
        rows.append({"path": name, "queries": len(sample), "depth": args.baseline_depth, "seconds": seconds,
                     "queries_per_s": len(sample) / seconds, "take_share": float("nan"), "model_share": float("nan"),
                     "write_share": float("nan")})
    print_table(rows, ["path", "queries", "depth", "seconds", "queries_per_s", "take_share", "model_share", "write_share"])
    speedup = reencode_s / cached_s
    print(f"cached vs re-encode every round at depth {args.baseline_depth}: {speedup:.0f}x faster; "
          f"{reencode.encoded} passages re-encoded for {len(sample)} queries; same top-10 for {same_top10}/{len(sample)}")
    print(f"wrote {write_results('rerank_throughput' + ('' if args.device == 'cpu' else '_' + args.device), {'device': args.device, 'rows': rows, 'threads': torch.get_num_threads(), 'cached_over_reencode_speedup': speedup, 'reencoded_passages': reencode.encoded, 'same_top10': same_top10})}")


def top10(table: pa.Table, query: str) -> list[str]:
    return table.filter(pc.equal(table["query_id"], query))["passage_id"].to_pylist()[:10]


if __name__ == "__main__":
    run_bench(main)
