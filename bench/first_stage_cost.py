"""What do lexical retrieval and the signals cost next to the rerank they feed?

On the demo's scifact workdir, for the same ``--queries`` test queries, in this process:
(1) hybrid first stage: dense search, BM25 over the whole corpus, fusion and every signal of
every candidate (``FirstStage.run``); (2) reading those candidates with their signal matrices
(``with_signals(iter_lists(...))``, what the rerank job does); (3) reranking the 1,000 candidates
with the demo's head. Prints seconds per query and the share of (1) + (2) in (3).

    python -m bench.first_stage_cost [--queries 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow as pa

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import load_config
from listcon.model import ListConRanker
from listcon.pipeline.data.readers import judged_queries
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.retrieval.retrieve import FirstStage
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.retrieval.signals import SIGNAL_SOURCE, with_signals
from listcon.pipeline.store.ranked_lists import iter_lists, read_provenance, write_ranked

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    config = load_config(args.config)
    work = config.work
    queries = judged_queries(config.data, config.split)[0].slice(0, args.queries)
    qids, texts = queries["id"].to_pylist(), queries["text"].to_pylist()
    passages, query_cache = EmbeddingCache(work.passages), EmbeddingCache(work.queries)
    index, pids, manifest = faiss_index.load(work.index)
    spec = faiss_index.IndexSpec(**manifest.spec)
    stage = FirstStage(index, pids, spec, LexicalIndex.load(work.lexical), passages, config.retrieve)
    vectors = query_cache.take(qids)

    started = time.perf_counter()
    candidates = pa.concat_tables([c for c, _ in stage.run(qids, texts, vectors, progress=False)])
    first = time.perf_counter() - started
    uri = str(work.root / "bench-first-stage.lance")
    write_ranked(candidates, uri, {"k": read_provenance(work.candidates(config.split))["k"]})

    started = time.perf_counter()
    lists = list(with_signals(iter_lists(uri, qids, rows=SIGNAL_SOURCE), config.retrieve.k))
    signals = time.perf_counter() - started

    head = ListConRanker.from_pretrained(config.head_dir)
    reranker = CachedReranker(head, passages, query_cache, config.rerank.settings, config.schedule)
    started = time.perf_counter()
    reranker.rerank(lists if head.config.signals else [item[:2] for item in lists])
    rerank = time.perf_counter() - started

    n = len(qids)
    rows = [{"step": "hybrid first stage + signals (retrieve)", "s_per_query": first / n, "share_of_rerank": first / rerank},
            {"step": "candidates + signal matrices (rerank input)", "s_per_query": signals / n,
             "share_of_rerank": signals / rerank},
            {"step": "rerank 1,000 candidates (head, iterative)", "s_per_query": rerank / n, "share_of_rerank": 1.0}]
    print_table(rows, ["step", "s_per_query", "share_of_rerank"])
    total = (first + signals) / rerank
    print(f"lexical retrieval and signals: {100 * total:.1f}% of the rerank time for the same {n} queries")
    print(f"wrote {write_results('first_stage_cost', {'rows': rows, 'queries': n, 'candidates': config.retrieve.k, 'share': total})}")


if __name__ == "__main__":
    run_bench(main)
