"""The rerank step over cached features: each query's candidates -> the head with iterative
pruning (through the one scoring path), batched across queries within a memory budget.

Only the small head runs here: passage features come from the Lance cache (one batched
take per query batch), never from the text encoder.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from listcon.model import ListConRanker, ListScorer, PruneSchedule
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.embedding_cache import EmbeddingCache, MissingPassagesError
from listcon.schemas import RANKINGS

log = logging.getLogger(__name__)


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's weights and config (part of a ranking's provenance)."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(model_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_dim(model: ListConRanker, passages: EmbeddingCache) -> None:
    """Refuse a head trained on features of another width than the cache holds."""
    dim = passages.metadata["dim"]
    if model.config.embed_dim != dim:
        raise ValueError(f"the checkpoint expects embed_dim={model.config.embed_dim}, but the passage cache at "
                         f"{passages.uri} holds {dim}-d vectors; use a head trained on this encoder's features")


def make_scorer(model: ListConRanker, settings: RerankSettings, schedule: PruneSchedule) -> ListScorer:
    """The scoring path for ``settings``: the head moved to its device, precision resolved there."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return ListScorer(model.to(device).eval(), schedule, settings.precision, device, settings.memory_budget_mb)


class CachedReranker:
    """Reranks candidate lists with a head over cached features; a plain class (Ray wraps it)."""

    def __init__(self, model: ListConRanker, passages: EmbeddingCache, queries: EmbeddingCache,
                 settings: RerankSettings = RerankSettings(), schedule: PruneSchedule = PruneSchedule()) -> None:
        check_dim(model, passages)
        self.settings = settings
        self.scorer = make_scorer(model, settings, schedule)
        self.passages, self.queries = passages, queries
        self.extra_queries: dict[str, np.ndarray] = {}  # vectors of queries the cache lacks (encoded by the caller)
        self.skipped_missing = 0
        self.seconds = {"take": 0.0, "model": 0.0}  # where the time goes (bench, logs)

    def rerank(self, lists: list[tuple[str, list[str]]]) -> pa.Table:
        """Rankings rows for ``[(query_id, candidate ids best-first), ...]``, in batches that fit the budget."""
        depth = self.settings.depth
        lists = [(q, c[:depth] if depth else c) for q, c in lists]
        parts = [self._rerank_batch(lists[part]) for part in self.scorer.batches([len(c) for _, c in lists])]
        return pa.concat_tables(parts) if parts else RANKINGS.empty_table()

    def _rerank_batch(self, lists: list[tuple[str, list[str]]]) -> pa.Table:
        flat = [p for _, c in lists for p in c]
        positions = self.passages.positions(flat)
        if (positions < 0).any():
            missing = [p for p, i in zip(flat, positions) if i < 0]
            if not self.settings.skip_missing:
                raise MissingPassagesError(self.passages.uri, missing)
            self.skipped_missing += len(missing)
            known = set(np.asarray(flat, dtype=object)[positions >= 0])
            lists = [(q, [p for p in c if p in known]) for q, c in lists]
            flat = [p for _, c in lists for p in c]
        if not flat:
            return RANKINGS.empty_table()
        started = time.perf_counter()
        vectors = self.passages.take(flat)
        query_vectors = self._query_vectors([q for q, _ in lists])
        self.seconds["take"] += time.perf_counter() - started
        offsets = np.cumsum([0, *(len(c) for _, c in lists)])
        started = time.perf_counter()
        order, scores, rounds = self.scorer.rank(query_vectors, [vectors[s:e] for s, e in zip(offsets[:-1], offsets[1:])])
        self.seconds["model"] += time.perf_counter() - started
        return rankings_table(lists, order, scores, rounds)


    def _query_vectors(self, query_ids: list[str]) -> np.ndarray:
        if not self.extra_queries:
            return self.queries.take(query_ids)
        cached = [q for q in query_ids if q not in self.extra_queries]
        found = dict(zip(cached, self.queries.take(cached))) if cached else {}
        return np.stack([self.extra_queries[q] if q in self.extra_queries else found[q] for q in query_ids])


def rankings_table(lists: list[tuple[str, list[str]]], order: np.ndarray, scores: np.ndarray, rounds: np.ndarray) -> pa.Table:
    """Rankings rows from iterative inference's output for ``lists`` (query, candidates)."""
    lengths = [len(c) for _, c in lists]
    qid, pid, rank, score, rnd = [], [], [], [], []
    for i, ((query, candidates), length) in enumerate(zip(lists, lengths)):
        qid += [query] * length
        pid += [candidates[j] for j in order[i, :length]]
        rank.append(np.arange(1, length + 1, dtype=np.int32))
        score.append(scores[i, :length])
        rnd.append(rounds[i, :length].astype(np.int32))
    if not qid:
        return RANKINGS.empty_table()
    return pa.table({"query_id": qid, "passage_id": pid, "rank": np.concatenate(rank), "score": np.concatenate(score),
                     "round": np.concatenate(rnd)}, schema=RANKINGS)
