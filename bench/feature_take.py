"""Feature loading vs reranking: time to take 1,000 cached vectors by id from Lance.

Builds an embedding table of ``--rows`` random 384-d vectors (float32 and float16), written
in 1,024-row commits like the embed job, then times taking 1,000 random ids (a query's
candidates) and compares it with the head's iterative rerank of 1,000 candidates, measured
in the same process. Feature loading must not dominate reranking.

    python -m bench.feature_take [--rows 200000]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from bench.common import print_table, run_bench, timed, write_results
from listcon.model import ListConRanker, ListConRankerConfig, iterative_rerank
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.schemas import embedding_schema, vectors_table

DIM, CANDIDATES = 384, 1000


def build_table(uri: str, rows: int, dtype: str) -> EmbeddingCache:
    cache = EmbeddingCache(uri)
    schema = embedding_schema(DIM, dtype, {"model": "bench", "fingerprint": "x", "pooling": "mean", "normalize": False, "max_length": 256})
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1024):
        n = min(1024, rows - start)
        ids = [f"doc{i}" for i in range(start, start + n)]
        cache.upsert(vectors_table(ids, ids, rng.standard_normal((n, DIM)).astype(np.float32), schema))
    if len(cache.dataset.get_fragments()) > 32:
        cache.compact()
    return EmbeddingCache(uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ListConRanker(ListConRankerConfig(embed_dim=DIM, hidden_size=DIM, num_heads=12, num_layers=2, ffn_size=2048)).eval()
    q, p = torch.randn(1, DIM), torch.randn(1, CANDIDATES, DIM)
    mask = torch.ones(1, CANDIDATES, dtype=torch.bool)

    def rerank() -> None:
        with torch.inference_mode():
            iterative_rerank(model, q, p, mask)

    model_s = timed(rerank, repeats=3)
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            cache = build_table(f"{tmp}/{dtype}.lance", args.rows, dtype)
            cache.positions(["doc0"])  # build the id index once, as a rerank worker does
            draws = [[f"doc{i}" for i in rng.choice(args.rows, CANDIDATES, replace=False)] for _ in range(20)]
            it = iter(draws)
            take_s = timed(lambda: cache.take(next(it)), repeats=15, warmup=3)
            lookup_s = timed(lambda: cache.positions(draws[0]), repeats=15)
            rows.append({"dtype": dtype, "table_rows": args.rows, "fragments": len(cache.dataset.get_fragments()),
                         "take_ms": 1e3 * take_s, "id_lookup_ms": 1e3 * lookup_s, "rerank_ms": 1e3 * model_s,
                         "take_over_rerank": take_s / model_s})
    print_table(rows, ["dtype", "table_rows", "fragments", "take_ms", "id_lookup_ms", "rerank_ms", "take_over_rerank"])
    print(f"wrote {write_results('feature_take', {'candidates': CANDIDATES, 'dim': DIM, 'rows': rows})}")


if __name__ == "__main__":
    run_bench(main)
