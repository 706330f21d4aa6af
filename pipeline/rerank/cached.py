"""The rerank step over cached features: each query's candidates -> the head with iterative
pruning (through the one scoring path), batched across queries within a memory budget.

Only the small head runs here: passage features come from the Lance cache (one batched
take per query batch), never from the text encoder.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import pyarrow as pa
import torch

from listcon.model import ListConRanker, ListScorer, PruneSchedule
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.retrieval.signals import select, z_fusion_of
from listcon.pipeline.store.embedding_cache import EmbeddingCache, MissingPassagesError
from listcon.schemas import RANKINGS

log = logging.getLogger(__name__)


def check_dim(model: ListConRanker, passages: EmbeddingCache) -> None:
    """Refuse a head trained on features of another width than the cache holds."""
    dim = passages.metadata["dim"]
    if model.config.embed_dim != dim:
        raise ValueError(f"the checkpoint expects embed_dim={model.config.embed_dim}, but the passage cache at "
                         f"{passages.uri} holds {dim}-d vectors; use a head trained on this encoder's features")


def make_scorer(model: ListConRanker, settings: RerankSettings, schedule: PruneSchedule) -> ListScorer:
    """The scoring path for ``settings``, precision resolved on its device. A head on another device
    is copied there: the caller's module stays where it was (a benchmark may still feed it CPU tensors)."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_device = model if next(model.parameters()).device == device else copy.deepcopy(model).to(device)
    return ListScorer(on_device.eval(), schedule, settings.precision, device, memory_budget_mb(settings, device))


def memory_budget_mb(settings: RerankSettings, device: torch.device) -> int:
    """The configured activation budget, else 1 GiB on CPU and half of what is free on a GPU (a GPU
    runs best on as many lists per forward as fit; 1 GiB held it to about 26 lists of 1,000)."""
    if settings.memory_budget_mb is not None:
        return settings.memory_budget_mb
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1024, free // 2**21)
    return 1024


class CachedReranker:
    """Reranks candidate lists with a head over cached features; a plain class (Ray wraps it)."""

    def __init__(self, model: ListConRanker, passages: EmbeddingCache, queries: EmbeddingCache,
                 settings: RerankSettings = RerankSettings(), schedule: PruneSchedule = PruneSchedule(),
                 fusion: float | None = None) -> None:
        check_dim(model, passages)
        self.settings = settings
        self.fusion = fusion  # a dense weight: rank by the corpus's adapted z-score fusion, not by the head
        self.scorer = make_scorer(model, settings, schedule)
        self.passages, self.queries = passages, queries
        self.extra_queries: dict[str, np.ndarray] = {}  # vectors of queries the cache lacks (encoded by the caller)
        self.skipped_missing = 0
        self.seconds = {"take": 0.0, "model": 0.0}  # where the time goes (bench, logs)

    def rerank(self, lists: list[tuple]) -> pa.Table:
        """Rankings rows for ``[(query_id, candidate ids best-first[, signal matrix]), ...]``.

        Lists are scored in batches that fit the memory budget. With a depth, each query's
        top-``depth`` are reranked and the rest follow in first-stage order (round -1, scores
        below every reranked one), so deeper metrics compare fairly across depths. A head with
        signals needs each list's signal matrix (``signals.with_signals``), and so does the
        adapted fusion (``fusion``), which ranks each list by ``z_fusion_of`` its whole matrix instead of the head.
        """
        if self.fusion is not None:
            return self._by_fusion(lists)
        names = self.scorer.head.config.signals
        if names and any(len(item) < 3 for item in lists):
            raise ValueError(f"this head takes the first-stage signals {list(names)}; rerank candidates that carry "
                             "them (a candidates table written by `listcon retrieve`)")
        depth = self.settings.depth
        tails = {item[0]: item[1][depth:] for item in lists} if depth else {}
        lists = [(item[0], item[1][:depth] if depth else item[1], *item[2:]) for item in lists]
        if names:
            lists = [(q, c, select(m[: len(c)], names, f"the candidates of query {q!r}")) for q, c, m in lists]
        parts = [self._rerank_batch(lists[part]) for part in self.scorer.batches([len(item[1]) for item in lists])]
        table = pa.concat_tables(parts) if parts else RANKINGS.empty_table()
        return with_tails(table, tails) if any(tails.values()) else table

    def _rerank_batch(self, lists: list[tuple]) -> pa.Table:
        flat = [p for item in lists for p in item[1]]
        positions = self.passages.positions(flat)
        if (positions < 0).any():
            missing = [p for p, i in zip(flat, positions) if i < 0]
            if not self.settings.skip_missing:
                raise MissingPassagesError(self.passages.uri, missing)
            self.skipped_missing += len(missing)
            known = set(np.asarray(flat, dtype=object)[positions >= 0])
            lists = [(item[0], [p for p in item[1] if p in known],
                      *([item[2][[p in known for p in item[1]]]] if len(item) > 2 else [])) for item in lists]
            flat = [p for item in lists for p in item[1]]
        if not flat:
            return RANKINGS.empty_table()
        started = time.perf_counter()
        vectors = self.passages.take(flat)
        query_vectors = self._query_vectors([item[0] for item in lists])
        self.seconds["take"] += time.perf_counter() - started
        offsets = np.cumsum([0, *(len(item[1]) for item in lists)])
        blocks = [vectors[s:e] for s, e in zip(offsets[:-1], offsets[1:])]
        if self.scorer.head.config.signals:
            blocks = [np.concatenate([b, item[2]], axis=1) for b, item in zip(blocks, lists)]
        started = time.perf_counter()
        order, scores, rounds = self.scorer.rank(query_vectors, blocks)
        self.seconds["model"] += time.perf_counter() - started
        return rankings_table([item[:2] for item in lists], order, scores, rounds)


    def _by_fusion(self, lists: list[tuple]) -> pa.Table:
        """Each list's top-``depth`` (all without a depth) ordered by the adapted fusion over its whole list
        (ties: first-stage order), the rest after it in first-stage order; round 0 (no pruning ran), scores the
        logistic of the fusion."""
        if any(len(item) < 3 for item in lists):
            raise ValueError("the adapted fusion ranks by the first-stage signals; rerank candidates that carry them "
                             "(a candidates table written by `listcon retrieve`)")
        depth, parts, tails = self.settings.depth, [], {}
        for query, candidates, matrix in lists:
            top = len(candidates) if depth is None else min(depth, len(candidates))
            fused = z_fusion_of(matrix[: len(candidates)], self.fusion)[:top]
            order = np.lexsort((np.arange(top), -fused))
            score = 1.0 / (1.0 + np.exp(-fused[order]))  # in (0, 1) like the head's, above the tail's -1, -2, ...
            parts.append(rankings_table([(query, candidates[:top])], order[None], score[None],
                                        np.zeros((1, top), dtype=np.int32)))
            tails[query] = candidates[top:]
        table = pa.concat_tables(parts) if parts else RANKINGS.empty_table()
        return with_tails(table, tails) if any(tails.values()) else table

    def _query_vectors(self, query_ids: list[str]) -> np.ndarray:
        if not self.extra_queries:
            return self.queries.take(query_ids)
        cached = [q for q in query_ids if q not in self.extra_queries]
        found = dict(zip(cached, self.queries.take(cached))) if cached else {}
        return np.stack([self.extra_queries[q] if q in self.extra_queries else found[q] for q in query_ids])


def with_tails(table: pa.Table, tails: dict[str, list[str]]) -> pa.Table:
    """Each query's reranked rows followed by its not-reranked candidates in first-stage order
    (round -1; scores -1, -2, ... below every reranked score, so the order stays strictly decreasing)."""
    parts, qids = [], table["query_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True]) if len(qids) else np.array([0])
    done = set()
    for start, end in zip(bounds[:-1], bounds[1:]):
        query = qids[start]
        parts.append(table.slice(start, end - start))
        done.add(query)
        parts.append(_tail_rows(query, tails.get(query, []), end - start))
    for query, tail in tails.items():
        if query not in done and tail:
            parts.append(_tail_rows(query, tail, 0))
    return pa.concat_tables(parts)


def _tail_rows(query: str, tail: list[str], offset: int) -> pa.Table:
    n = len(tail)
    return pa.table({"query_id": [query] * n, "passage_id": tail, "rank": np.arange(offset + 1, offset + n + 1, dtype=np.int32),
                     "score": -np.arange(1, n + 1, dtype=np.float64), "round": np.full(n, -1, dtype=np.int32)},
                    schema=RANKINGS)


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
