"""One rerank worker: loads the head and the caches once, reranks shards of queries.

A plain class; the rerank job runs it as a Ray actor, tests call it directly.
"""

from __future__ import annotations

import time

import torch

from listcon.model import ListConRanker, PruneSchedule
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.shards import ShardStore


class RerankShard:
    """``worker.run(shard, lists)`` reranks ``lists`` and stores them as shard ``shard``."""

    def __init__(self, model_dir: str, passages_uri: str, queries_uri: str, settings: RerankSettings,
                 schedule: PruneSchedule, store: ShardStore, threads: int | None = None, anchor: dict[str, float] | None = None,
                 fusion: float | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        model = ListConRanker.from_pretrained(model_dir)
        if anchor is not None:  # outside the head's domain: an anchor fusion ({} its own), the learned part off
            model = model.anchored(anchor)
        self.reranker = CachedReranker(model, EmbeddingCache(passages_uri), EmbeddingCache(queries_uri), settings, schedule,
                                       fusion)
        self.store = store

    def run(self, shard: int, lists: list[tuple[str, list[str]]]) -> tuple[int, int, dict[str, float]]:
        """Returns (shard, candidates skipped as missing, seconds spent in take / model / write)."""
        missing, seconds = self.reranker.skipped_missing, dict(self.reranker.seconds)
        table = self.reranker.rerank(lists)
        started = time.perf_counter()
        self.store.write(shard, table)
        spent = {k: self.reranker.seconds[k] - seconds[k] for k in seconds}
        spent["write"] = time.perf_counter() - started
        return shard, self.reranker.skipped_missing - missing, spent
