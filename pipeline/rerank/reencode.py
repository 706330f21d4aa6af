"""Baseline peer: the released-style iterative inference that re-runs the text encoder on
the surviving passages in every round, instead of reading cached features.

Same head, same scoring path (``ListScorer``: padding, precision, Algorithm 1), same output
table: only where the passage features come from differs, so the cost of not caching shows
on the same queries.
"""

from __future__ import annotations

import time

import pyarrow as pa
import torch

from listcon.model import BatchEncoder, ListConRanker, ListScorer, PruneSchedule
from listcon.pipeline.rerank.cached import rankings_table
from listcon.pipeline.rerank.settings import RerankSettings


class ReencodeReranker:
    """Reranks ``[(query_id, candidate ids)]`` re-encoding passage texts each round."""

    def __init__(self, head: ListConRanker, encoder: BatchEncoder, passage_texts: dict[str, str],
                 query_texts: dict[str, str], settings: RerankSettings = RerankSettings(),
                 schedule: PruneSchedule = PruneSchedule()) -> None:
        self.scorer = ListScorer(head.eval(), schedule, settings.precision, next(head.parameters()).device)
        self.encoder, self.settings = encoder, settings
        self.passage_texts, self.query_texts = passage_texts, query_texts
        self.encoded = 0  # passages run through the encoder
        self.seconds = {"encode": 0.0, "model": 0.0}

    def rerank(self, lists: list[tuple[str, list[str]]]) -> pa.Table:
        parts = [self._rerank_one(query, candidates) for query, candidates in lists if candidates]
        return pa.concat_tables(parts)

    def _rerank_one(self, query: str, candidates: list[str]) -> pa.Table:
        candidates = candidates[: self.settings.depth] if self.settings.depth else candidates
        texts = [self.passage_texts[p] for p in candidates]
        device = self.scorer.device
        h_q = torch.from_numpy(self.encoder.encode([self.query_texts[query]])).to(device)

        def score(q: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            alive = index[0, mask[0], 0].long().tolist()  # candidate indices that survive this round
            started = time.perf_counter()
            features = torch.from_numpy(self.encoder.encode([texts[i] for i in alive])).to(device)[None]
            self.seconds["encode"] += time.perf_counter() - started
            self.encoded += len(alive)
            started = time.perf_counter()
            out = torch.zeros(mask.shape, device=device)
            out[0, : len(alive)] = self.scorer.score(h_q, features, torch.ones(1, len(alive), dtype=torch.bool, device=device))[0]
            self.seconds["model"] += time.perf_counter() - started
            return out

        index = torch.arange(len(candidates), dtype=torch.float32)[:, None]  # candidates travel as indices
        order, scores, rounds = self.scorer.rank(h_q, [index], score_fn=score)
        return rankings_table([(query, candidates)], order, scores, rounds)
