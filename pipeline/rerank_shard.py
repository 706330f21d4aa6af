"""One rerank worker: loads the head and the caches once, reranks shards of queries.

A plain class; the rerank job runs it as a Ray actor, tests call it directly.
"""

from __future__ import annotations

import torch

from listcon.model import ListConRanker
from listcon.pipeline.embedding_cache import EmbeddingCache
from listcon.pipeline.rerank import Reranker, RerankSettings
from listcon.pipeline.shards import ShardStore


class RerankShard:
    """``worker.run(shard, lists)`` reranks ``lists`` and stores them as shard ``shard``."""

    def __init__(self, model_dir: str, passages_uri: str, queries_uri: str, settings: RerankSettings,
                 store: ShardStore, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        model = ListConRanker.from_pretrained(model_dir)
        self.reranker = Reranker(model, EmbeddingCache(passages_uri), EmbeddingCache(queries_uri), settings)
        self.store = store

    def run(self, shard: int, lists: list[tuple[str, list[str]]]) -> tuple[int, int, int]:
        """Returns (shard, rows written, candidates skipped as missing)."""
        before = self.reranker.skipped_missing
        table = self.reranker.rerank(lists)
        self.store.write(shard, table)
        return shard, table.num_rows, self.reranker.skipped_missing - before
